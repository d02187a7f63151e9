"""Vault benchmark (issue 3): import rate against a plain unencrypted bulk insert of the same
rows into the same database, measured in the same run; lookup p50/p99; backup and restore.

    .venv/bin/python bench/vault.py                   # 100,000 contacts, SQLite and PostgreSQL
    .venv/bin/python bench/vault.py --million         # 1,000,000 contacts
    .venv/bin/python bench/vault.py --contacts 20000 --backend sqlite

Targets: import ratio >= 0.5; lookup p99 <= 2 ms at 1M; backup and restore of 1M <= 60 s each.
PostgreSQL: uses a scratch database on 127.0.0.1:5432 (created and dropped here).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy import (  # noqa: E402
    Column,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Table,
    UniqueConstraint,
)
from sqlmodel import SQLModel  # noqa: E402

from contacts.backup.restore import restore_snapshot  # noqa: E402
from contacts.backup.snapshot import create_snapshot  # noqa: E402
from contacts.core.audit import Actor  # noqa: E402
from contacts.core.crypto import Crypto  # noqa: E402
from contacts.core.db import bulk_insert, make_engine, session_scope  # noqa: E402
from contacts.core.ids import new_id  # noqa: E402
from contacts.core.schema import database_revision, head_revision, upgrade_database  # noqa: E402
from contacts.vault import service  # noqa: E402
from contacts.vault import sync as vault_sync  # noqa: E402
from contacts.vault.schemas import AccountIn  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres"
CONTACTS_PER_ACCOUNT = 3
# The tables an import writes, parents first (the order both inserts follow).
WRITTEN_TABLES = ("account", "site", "contact", "contact_site", "contact_version")


def make_rows(count: int, seed: int = 11) -> list[dict]:
    chooser = random.Random(seed)
    rows = []
    for serial in range(count):
        account = serial // CONTACTS_PER_ACCOUNT
        rows.append({
            "account_external_id": f"A{account:07d}", "account_name": f"Account {account}",
            "site_external_id": f"S{account:07d}", "site_url": f"https://a{account}.example.net",
            "contact_external_id": f"C{serial:08d}", "name": f"Person {serial:08d}",
            "email": f"person{serial:08d}@a{account}.example.net",
            "phone": f"+1 415 {serial // 10000 % 1000:03d} {serial % 10000:04d}",
            "role": chooser.choice(["site_admin", "billing", "technical", "other"]),
            "locale": "en", "timezone": "America/New_York",
        })
    return rows


def as_entries(rows: list[dict]) -> list[vault_sync.AccountEntry]:
    accounts: dict[str, dict] = {}
    for row in rows:
        account = accounts.setdefault(row["account_external_id"], {
            "external_id": row["account_external_id"], "name": row["account_name"],
            "sites": [{"external_id": row["site_external_id"], "url": row["site_url"]}],
            "contacts": []})
        account["contacts"].append({
            "external_id": row["contact_external_id"], "name": row["name"],
            "email": row["email"], "phone": row["phone"], "role": row["role"],
            "locale": row["locale"], "timezone": row["timezone"],
            "sites": [row["site_external_id"]]})
    return [vault_sync.AccountEntry.from_document(AccountIn.model_validate(account), index)
            for index, account in enumerate(accounts.values())]


def plain_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows the import writes, as a plain unencrypted vault would write them: same
    tables and columns, personal fields in clear, plaintext lookup columns, no HMAC."""
    now = datetime.now(UTC)
    stamps = {"created_at": now, "updated_at": now, "deleted_at": None}
    out: dict[str, list[dict]] = {name: [] for name in WRITTEN_TABLES}
    account_ids: dict[str, str] = {}
    site_ids: dict[str, str] = {}
    for row in rows:
        account = row["account_external_id"]
        if account not in account_ids:
            account_ids[account] = new_id("acc")
            site_ids[account] = new_id("site")
            out["account"].append({"id": account_ids[account], "external_id": account,
                                   "name": row["account_name"], **stamps})
            out["site"].append({"id": site_ids[account], "account_id": account_ids[account],
                                "external_id": row["site_external_id"], "url": row["site_url"],
                                "hostname": row["site_url"][8:], "name": None, **stamps})
        contact_id = new_id("ctc")
        out["contact"].append({
            "id": contact_id, "account_id": account_ids[account],
            "external_id": row["contact_external_id"], "name_encrypted": row["name"],
            "email_encrypted": row["email"], "phone_encrypted": row["phone"],
            "email_index": row["email"].lower(), "phone_index": row["phone"],
            "domain_index": row["email"].rpartition("@")[2], "content_digest": "",
            "role": row["role"], "locale": row["locale"], "timezone": row["timezone"],
            "source": "import", "version": 1, "last_confirmed_at": None, **stamps})
        out["contact_site"].append({"contact_id": contact_id, "site_id": site_ids[account]})
        out["contact_version"].append({
            "contact_id": contact_id, "account_id": account_ids[account], "version": 1,
            "event": "created", "at": now, "actor_kind": "system", "actor_id": "bench",
            "snapshot_encrypted": json.dumps(row)})
    return out


def plain_insert(engine, rows: list[dict], batch: int) -> float:
    """The baseline: the same rows, unencrypted, into copies of the same tables (same columns,
    keys, unique constraints, indexes and foreign keys), in batches of the same size."""
    return insert_into_copies(engine, plain_rows(rows), batch)


def stored_rows(engine) -> dict[str, list[dict]]:
    """The rows an import stored (encrypted fields, blind indexes, versions), read back."""
    with engine.connect() as connection:
        return {name: [dict(row._mapping) for row in connection.execute(
                    SQLModel.metadata.tables[name].select())]
                for name in WRITTEN_TABLES}


def insert_into_copies(engine, prepared: dict[str, list[dict]], batch: int) -> float:
    """Seconds to insert these rows into copies of their tables (same columns, keys, unique
    constraints, indexes and foreign keys, between the copies), batch by batch, in one
    transaction, with the import's writer."""
    metadata = MetaData()
    copies = {}
    suffix = uuid.uuid4().hex[:6]
    for name in prepared:
        source = SQLModel.metadata.tables[name]
        copy = Table(f"plain_{name}_{suffix}", metadata, *[
            Column(column.name, column.type, primary_key=column.primary_key,
                   nullable=column.nullable, autoincrement=column.autoincrement)
            for column in source.columns])
        for index in source.indexes:
            Index(f"plain_{suffix}_{index.name}", *[copy.c[c.name] for c in index.columns],
                  unique=index.unique)
        for constraint in source.constraints:
            if isinstance(constraint, UniqueConstraint):
                copy.append_constraint(UniqueConstraint(*[copy.c[c.name]
                                                          for c in constraint.columns]))
            elif (isinstance(constraint, ForeignKeyConstraint)
                  and constraint.referred_table.name in prepared):
                copy.append_constraint(ForeignKeyConstraint(
                    [c.name for c in constraint.columns],
                    [f"plain_{constraint.referred_table.name}_{suffix}.{element.column.name}"
                     for element in constraint.elements]))
        copies[name] = copy
    metadata.create_all(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        for name, table_rows in prepared.items():
            for start in range(0, len(table_rows), batch):
                bulk_insert(connection, copies[name], table_rows[start:start + batch])
    seconds = time.perf_counter() - started
    metadata.drop_all(engine)
    return seconds


def vault_import(engine, vault, entries, batch: int) -> tuple[float, float]:
    """Seconds the import took, and the CPU seconds it used in this process and its worker
    processes (reaped when it ends; not the PostgreSQL server's)."""
    started, cpu = time.perf_counter(), process_cpu()
    with session_scope(engine) as session:
        vault_sync.sync(session=session, vault=vault, actor=Actor.system("bench"),
                        entries=entries, source="import", parallel=True)
    return time.perf_counter() - started, process_cpu() - cpu


def process_cpu() -> float:
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def lookups(engine, vault, rows, samples: int) -> tuple[float, float]:
    chooser = random.Random(5)
    emails = [chooser.choice(rows)["email"].upper() for _ in range(samples)]
    timings = []
    with session_scope(engine) as session:
        for email in emails:
            started = time.perf_counter()
            found = service.find_contacts(session=session, vault=vault, email=email)
            timings.append((time.perf_counter() - started) * 1000)
            assert len(found) == 1
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.99) - 1]


def scratch_database(backend: str, workdir: Path, name: str):
    if backend == "sqlite":
        return f"sqlite:///{workdir}/{name}.db", lambda: None
    database = f"lifeline_bench_{name}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')

    def drop():
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}", drop


def run(backend: str, count: int, batch: int, floor: bool) -> dict:
    key = os.urandom(32)
    vault = service.Vault(Crypto((("k1", key),), os.urandom(32)), batch_size=batch)
    rows = make_rows(count)
    entries = as_entries(rows)
    figures = {"backend": backend, "contacts": count}
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-") as work:
        workdir = Path(work)
        url, drop = scratch_database(backend, workdir, "main")
        restore_url, drop_restore = scratch_database(backend, workdir, "restored")
        try:
            engine = make_engine(url)
            upgrade_database(engine)
            plain = plain_insert(engine, rows, batch)
            imported, figures["import_cpu_s"] = vault_import(engine, vault, entries, batch)
            figures["plain_s"] = plain
            figures["plain_rows_per_s"] = count / plain
            figures["import_rows_per_s"] = count / imported
            figures["ratio"] = plain / imported
            if floor:
                # The same writer given the rows the import stored, already encrypted and
                # indexed: what the rows alone cost, without checking or encrypting anything.
                figures["stored_rows_per_s"] = count / insert_into_copies(
                    engine, stored_rows(engine), batch)
            figures["lookup_p50_ms"], figures["lookup_p99_ms"] = lookups(engine, vault, rows, 2000)
            started = time.perf_counter()
            snapshot, manifest = create_snapshot(
                engine=engine, backup_key=key, directory=workdir / "backups",
                revision=database_revision(engine))
            figures["backup_s"] = time.perf_counter() - started
            figures["snapshot_mb"] = snapshot.stat().st_size / 1e6
            target = make_engine(restore_url)
            upgrade_database(target)
            started = time.perf_counter()
            restore_snapshot(path=snapshot, backup_key=key, engine=target,
                             head_revision=head_revision())
            figures["restore_s"] = time.perf_counter() - started
            figures["rows_in_snapshot"] = manifest.rows
            target.dispose()
            engine.dispose()
        finally:
            drop()
            drop_restore()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="1,000,000 contacts")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--floor", action="store_true",
                        help="also insert the rows the import stored, encrypted and indexed, "
                             "with the same writer: the ratio no import can exceed")
    args = parser.parse_args()
    count = 1_000_000 if args.million else args.contacts
    if count < 10:
        parser.error("--contacts must be at least 10")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"vault benchmark: {count:,} contacts, batches of {args.batch}")
    print(f"{'backend':<11}{'plain/s':>10}{'import/s':>10}{'ratio':>7}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'backup s':>10}{'restore s':>10}{'rows':>10}")
    results = []
    for backend in backends:
        f = run(backend, count, args.batch, args.floor)
        results.append(f)
        print(f"{backend:<11}{f['plain_rows_per_s']:>10,.0f}{f['import_rows_per_s']:>10,.0f}"
              f"{f['ratio']:>7.2f}{f['lookup_p50_ms']:>8.3f}{f['lookup_p99_ms']:>8.3f}"
              f"{f['backup_s']:>10.1f}{f['restore_s']:>10.1f}{f['rows_in_snapshot']:>10,}")
    print("ratio = import rate / plain unencrypted bulk insert rate, same rows, same database, "
          "same run (target >= 0.5)")
    cores = len(os.sched_getaffinity(0))  # the cores this process may run on
    for f in results:
        # However well the import spread its work, it cannot end before its CPU time
        # divided among the cores has passed.
        print(f"{f['backend']}: the import used {f['import_cpu_s']:.1f} s of CPU (this process "
              f"and its workers{', not the server' if f['backend'] == 'postgresql' else ''}); "
              f"on {cores} cores that takes at least {f['import_cpu_s'] / cores:.1f} s: ratio "
              f"at most {f['plain_s'] / (f['import_cpu_s'] / cores):.2f}")
        if "stored_rows_per_s" in f:
            print(f"{f['backend']}: the stored rows alone (encrypted, indexed; no checks, no "
                  f"encryption) {f['stored_rows_per_s']:,.0f} contacts/s; ratio ceiling "
                  f"{f['stored_rows_per_s'] / f['plain_rows_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
