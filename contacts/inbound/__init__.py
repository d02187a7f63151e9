"""Inbound email: what customers send to Lifeline's addresses, read from IMAP mailboxes.

Layers, from the mailbox inwards:
- `mailbox.py`: the IMAP reader (imap-tools): fetch, hand each message's bytes to the
  router, then move it to `Lifeline/Done` or `Lifeline/Failed`; idempotent on the
  mailbox's UID and the Message-ID, so a crash between the read and the commit processes
  nothing twice. `imap.py` is its IMAP session; `watch.py` the workers' IDLE watch over a
  mailbox; `cli.py` is `flask inbound read`.
- `parsing.py` (with `reports.py`, `authentication.py`, `autoreplies.py`, `quoting.py`,
  `content.py`, over `mime.py`): pure functions from RFC 5322 bytes to `message.Inbound`;
  no database.
- The signed tokens of reply addresses (`support+<token>@`) and of the VERP return path
  (`bounces+<token>@`) are the core's (`core/mailtokens.py`): outgoing mail makes them.
- `routing.py`: where a parsed message goes (a report, a reply on a thread, an automatic
  reply, a new request), decided from the message alone; `store.py`: what is kept of it,
  sealed, and what staff pages read back; `routes.py`: the console's page of one email.
  Acting on it (threads, requests, late bounces) reaches five other areas, so it is composed
  above the domains, in `contacts/mailroom.py`.
"""
