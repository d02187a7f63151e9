"""Backups: encrypted, authenticated snapshots of Lifeline's whole database, kept outside it;
restore into an empty database; drills that prove a snapshot restores and checks out.

Layers, each over the ones below: canonical.py (the canonical form of rows, which checksums
cover), sealed.py (the encrypted file format), snapshot.py (taking snapshots, the folder of
them), restore.py (into an empty database, checked), drills.py (restore drills, recorded);
routes.py, api.py and cli.py on top. It reads every table through SQLModel's metadata, so it
imports no domain. Personal fields stay encrypted under the field keys inside a snapshot too.
"""
