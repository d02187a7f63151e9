"""Where an intake request's CPU goes (issue 4), in one process with Flask's test client.

    .venv/bin/python bench/intake_budget.py                  # SQLite, 3,000 requests a step
    .venv/bin/python bench/intake_budget.py --backend postgresql

CPU time per request, in the same run and process, of:
- the bare endpoint of bench/intake.py (202 through the same hooks): the baseline;
- POST /api/v1/requests with everything but its database write (validation, rate limits,
  the draft, sealing, the code email; the writer hands back the reference at once), then
  also without sealing and the code email, then also without the three rate limits: the
  differences are what each costs;
- the write alone, `RequestWriter.receive` (intake/writer.py), in group commits of 1, 8 and
  32 requests (under load each worker's writer thread commits the requests that arrived
  together).

It prints the ceiling of bench/intake.py's ratio: bare / (request path + write by 32), the
rate intake/bare that two workers would reach if the cores did nothing else. It is an upper
bound: the handoff to each worker's writer thread is left out, and so is PostgreSQL's own
CPU; the rate-limit counters are in memory (bench/intake.py's `--limits-storage memory://`),
where Redis's client costs more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from intake import BARE_PATH, INTAKE_PATH, migrate, server_environment  # noqa: E402
from vault import scratch_database  # noqa: E402

from contacts.core import ratelimit  # noqa: E402
from contacts.core.services import services  # noqa: E402
from contacts.intake.service import RequestWriter  # noqa: E402

MESSAGE = "Our site has been down since nine this morning."
# Each step runs in rounds, interleaved with the others, and counts its least costly round:
# the machine's other work and the collector only ever add to a round.
ROUNDS = 5


def body(serial: int) -> str:
    return json.dumps({"email": f"user{serial}@budget.example", "message": MESSAGE})


def cpu_per_request(client, path: str, serials: range) -> float:
    """Milliseconds of this process's CPU per request."""
    started = time.process_time()
    for serial in serials:
        answer = client.post(path, data=body(serial), content_type="application/json")
        if answer.status_code != 202:
            raise SystemExit(f"{path} answered {answer.status_code}: {answer.get_data()[:200]}")
    return (time.process_time() - started) * 1000 / len(serials)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per step")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    if args.requests < 100:
        parser.error("--requests must be at least 100")
    with tempfile.TemporaryDirectory(prefix="lifeline-budget-") as work:
        workdir = Path(work)
        url, drop = scratch_database(args.backend, workdir, "budget")
        try:
            env = server_environment(workdir, url, "memory://")
            migrate(env)
            os.environ.update(env)
            return measure(args.requests, args.backend)
        finally:
            drop()


def measure(count: int, backend: str) -> int:
    from intake_app import app

    from contacts.core.db import utcnow
    from contacts.intake.schemas import RequestIn
    from contacts.intake.writer import draft_request

    client = app.test_client()
    writer = services(app).get(RequestWriter)
    limiter = ratelimit.limiter_of(app)
    limiting = limiter.enabled
    cpu_per_request(client, BARE_PATH, range(300))  # warm-up: imports, caches, first writes
    cpu_per_request(client, INTAKE_PATH, range(300, 600))

    def without_write(draft):
        writer.prepare(draft=draft, now=draft.received_at)
        return draft.reference

    @contextmanager
    def configured(write, limits: bool) -> Iterator[None]:
        if write is not None:
            writer.write = write  # on the instance; `del` brings back the method
        limiter.enabled = limits  # off, its per-request hooks go too: bare pays them
        try:
            yield
        finally:
            if write is not None:
                del writer.write
            limiter.enabled = limiting

    # The limiter is switched off only after every step that needs it: once it has been off,
    # rate-limited requests cost more than before (Flask-Limiter's state), so the steps
    # without it come last instead of in every round.
    phases = [{"bare": (BARE_PATH, None, True), "path": (INTAKE_PATH, without_write, True),
               "unsealed": (INTAKE_PATH, lambda draft: draft.reference, True)},
              {"bare_unlimited": (BARE_PATH, None, False),
               "unlimited": (INTAKE_PATH, lambda draft: draft.reference, False)}]
    least = {name: float("inf") for steps in phases for name in steps}
    share = max(count // ROUNDS, 20)
    serial = 10**6
    for steps in phases:
        for _ in range(ROUNDS):
            for name, (path, write, limits) in steps.items():
                with configured(write, limits):
                    least[name] = min(least[name],
                                      cpu_per_request(client, path, range(serial, serial + share)))
                serial += share
    bare, path = least["bare"], least["path"]
    sealing = path - least["unsealed"]
    limits = (least["unsealed"] - least["unlimited"]) - (bare - least["bare_unlimited"])
    rest = least["unlimited"] - least["bare_unlimited"]

    writes = dict.fromkeys((1, 8, 32), float("inf"))
    for _ in range(ROUNDS):
        for size in writes:
            batches = []
            for _ in range(max(share // size, 1)):
                drafts = [draft_request(RequestIn.model_validate_json(body(serial + n)),
                                        locale="en", now=utcnow())
                          for n in range(size)]
                serial += size
                batches.append([writer.prepare(draft=draft, now=draft.received_at)
                                for draft in drafts])
            started = time.process_time()
            for batch in batches:
                if writer.receive(prepared=batch, now=utcnow()) is None:
                    raise SystemExit("the database refused a write (the requests were "
                                     "spooled): no figure for the write")
            writes[size] = min(writes[size], (time.process_time() - started) * 1000
                               / sum(map(len, batches)))

    print(f"intake CPU budget, {backend}, {count:,} requests a step in {ROUNDS} interleaved "
          "rounds, one process (least milliseconds of CPU per request of any round)")
    print(f"  bare endpoint (baseline)                       {bare:6.3f}")
    print(f"  intake request path without its write          {path:6.3f}  "
          f"({path / bare:.1f} x bare), of which:")
    print(f"    sealing, blind indexes, the code email         {sealing:6.3f}")
    print(f"    the three rate limits (in-memory counters)     {limits:6.3f}")
    print(f"    the rest: body checks, validation, the draft   {rest:6.3f}  (above bare)")
    for size, cost in writes.items():
        print(f"  write, group commits of {size:<2}                     {cost:6.3f}")
    ceiling = bare / (path + writes[32])
    print(f"ratio ceiling (bare / (path + write by 32)): {ceiling:.2f}  (target >= 0.5)"
          + ("; PostgreSQL's own CPU not counted" if backend == "postgresql" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
