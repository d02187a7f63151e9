"""Key rotation under load (issue 3): rotate the field key of a vault of N contacts while
lookups keep running, then retire the old key and decrypt every field with the new one alone.

    .venv/bin/python bench/rotation.py                      # 100,000 contacts, SQLite
    .venv/bin/python bench/rotation.py --backend postgresql --contacts 20000

Baseline, measured in the same run: the same lookups with no rotation running. It prints the
rotation time, the lookups answered during it (errors must be 0) and their latency against
the idle baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vault import as_entries, make_rows, scratch_database  # noqa: E402

from contacts.backup.drills import decrypt_every_field  # noqa: E402
from contacts.core import keyring  # noqa: E402
from contacts.core.audit import Actor  # noqa: E402
from contacts.core.crypto import Crypto  # noqa: E402
from contacts.core.db import make_engine, session_scope  # noqa: E402
from contacts.core.schema import upgrade_database  # noqa: E402
from contacts.core.settings import load_secrets, parse_keyring  # noqa: E402
from contacts.vault import service  # noqa: E402
from contacts.vault import sync as vault_sync  # noqa: E402


def vault_from(keys_dir: Path) -> service.Vault:
    secrets = load_secrets(keys_dir, {}, generate=True)
    crypto = Crypto(secrets.field_keys, secrets.blind_index_key,
                    reload_field_keys=lambda: parse_keyring((keys_dir / "field_keys").read_text()))
    return service.Vault(crypto, batch_size=2000)


def lookup_loop(engine, vault, emails, stop: threading.Event, timings: list, errors: list):
    position = 0
    while not stop.is_set():
        email = emails[position % len(emails)]
        position += 1
        started = time.perf_counter()
        try:
            with session_scope(engine) as session:
                (found,) = service.find_contacts(session=session, vault=vault, email=email)
                assert service.contact_view(session=session, vault=vault,
                                            contact=found).email == email
        except Exception as exc:  # noqa: BLE001 (every failure is counted and reported)
            errors.append(repr(exc))
            continue
        timings.append((time.perf_counter() - started) * 1000)


def percentiles(timings: list[float]) -> tuple[float, float, float]:
    ordered = sorted(timings)
    return (statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1], ordered[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifeline-rotation-") as work:
        workdir = Path(work)
        url, drop = scratch_database(args.backend, workdir, "rotation")
        try:
            engine = make_engine(url)
            upgrade_database(engine)
            keys_dir = workdir / "keys"
            writer_vault = vault_from(keys_dir)
            rows = make_rows(args.contacts)
            started = time.perf_counter()
            with session_scope(engine) as session:
                vault_sync.sync(session=session, vault=writer_vault,
                                actor=Actor.system("bench"), entries=as_entries(rows),
                                source="import", parallel=True)
            print(f"vault: {args.contacts:,} contacts on {args.backend}, imported in "
                  f"{time.perf_counter() - started:.1f} s; "
                  f"{keyring.count_fields(engine, key_id='k1'):,} fields under k1")

            emails = [row["email"] for row in rows[:: max(1, len(rows) // 2000)]]
            reader_vault = vault_from(keys_dir)  # a serving process: k1 only in memory
            idle, errors, stop = [], [], threading.Event()
            reader = threading.Thread(target=lookup_loop,
                                      args=(engine, reader_vault, emails, stop, idle, errors))
            reader.start()
            time.sleep(3)
            stop.set()
            reader.join()

            during, stop = [], threading.Event()
            reader = threading.Thread(target=lookup_loop,
                                      args=(engine, reader_vault, emails, stop, during, errors))
            reader.start()
            started = time.perf_counter()
            new_key = keyring.add_key(keys_dir / "field_keys")
            writer_vault.crypto.cipher.reload()
            changed = keyring.reencrypt(engine, writer_vault.crypto.cipher,
                                        batch_size=args.batch)
            rotation_s = time.perf_counter() - started
            stop.set()
            reader.join()
            left = keyring.count_fields(engine, not_key_id=new_key)

            keyring.retire_key(keys_dir / "field_keys", "k1", engine)
            fresh = vault_from(keys_dir)
            assert fresh.crypto.cipher.key_ids == (new_key,)
            decrypted = decrypt_every_field(engine, fresh.crypto.cipher)
            engine.dispose()
        finally:
            drop()
    idle_p = percentiles(idle)
    during_p = percentiles(during)
    print(f"rotation to {new_key}: {changed:,} fields re-encrypted in {rotation_s:.1f} s "
          f"({changed / rotation_s:,.0f} fields/s); {left} left under the old key")
    print(f"lookups while idle:     {len(idle):>7,}  p50 {idle_p[0]:.2f} ms  "
          f"p99 {idle_p[1]:.2f} ms  max {idle_p[2]:.2f} ms")
    print(f"lookups while rotating: {len(during):>7,}  p50 {during_p[0]:.2f} ms  "
          f"p99 {during_p[1]:.2f} ms  max {during_p[2]:.2f} ms  "
          f"(p99 ratio to idle {during_p[1] / idle_p[1]:.2f})")
    print(f"lookup errors: {len(errors)}")
    print(f"k1 retired; with {new_key} alone, {decrypted:,} fields decrypt")
    return 1 if errors or left else 0


if __name__ == "__main__":
    sys.exit(main())
