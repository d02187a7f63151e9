"""Triage pages at scale (accounts and escalations): the work queue and the account page with
10,000 accounts and 100,000 work items, against the bare staff home page in the same run.

    .venv/bin/python bench/triage.py                        # SQLite and PostgreSQL
    .venv/bin/python bench/triage.py --backend sqlite --accounts 2000 --items 20000
    .venv/bin/python bench/triage.py --backend sqlite --keep    # keep the data, then:
    .venv/bin/python bench/triage.py --reuse /tmp/lifeline-triage-XXXX --profile

Target: GET /console/items and GET /console/accounts/<id> answer in p50 <= 150 ms.

For each backend: a scratch database (a SQLite file in a temp dir; on PostgreSQL a database
created on 127.0.0.1:5432 and dropped at the end), migrated; development keys generated in
the temp dir; the real app (`create_app`). bench/triage_data.py fills it: staff, accounts
through `vault.sync.sync`, work items and their events. Then one Flask test client signs
in through /login (CSRF token included) as a support user and asks, one request at a time
and in shuffled order, for the queue (the default view, page 2, region=EMEA, one owner's
items, the breached ones, all statuses), the account page of 200 random accounts and of the
10 accounts with the most items, and the bare staff home page /console/ (the baseline: the
same sign-in, hooks, base template and session, no query of its own). Each figure is the
time client.get took to return the whole page.

PostgreSQL's statistics are refreshed (ANALYZE, as autovacuum would soon after a load);
SQLite runs with none, as the app never runs ANALYZE there.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import func, select, text  # noqa: E402
from triage_data import SIGN_IN_EMAIL, Generated, Progress, generate  # noqa: E402
from vault import scratch_database  # noqa: E402

from contacts.app import create_app  # noqa: E402
from contacts.core.db import make_engine  # noqa: E402
from contacts.core.schema import upgrade_database  # noqa: E402
from contacts.core.services import services  # noqa: E402
from contacts.core.settings import load_secrets  # noqa: E402
from contacts.escalations.models import ItemEvent, WorkItem  # noqa: E402
from contacts.staff.models import StaffUser  # noqa: E402
from contacts.vault.models import Account  # noqa: E402
from tests.helpers import Auth, StaffAccount, enrol_two_factor  # noqa: E402

TARGET_MS = 150.0
BASELINE = "baseline: GET /console/"
QUEUE_TOTAL = re.compile(rb"<p class=\"hint\">(\d+) item")


@dataclass
class Page:
    name: str
    group: str  # baseline, queue, account
    marker: bytes  # what the answer must hold
    timings: list[float] = field(default_factory=list)
    matched: int | None = None  # queue: the items the view holds

    @property
    def p50(self) -> float:
        return statistics.median(self.timings)

    @property
    def p95(self) -> float:
        ordered = sorted(self.timings)
        return ordered[max(0, round(0.95 * len(ordered)) - 1)]


@dataclass
class Facts:
    """What the measurement needs to know of the data, read from the database."""

    support: StaffAccount  # who signs in
    owner_id: str  # the support staff member with the most open items
    account_ids: list[str]
    busiest: list[tuple[str, int]]  # account ID, items
    items: int
    events: int
    open_items: int


def read_facts(engine) -> Facts:
    with engine.connect() as connection:
        support = connection.execute(
            select(StaffUser.id).where(StaffUser.role == "support")
            .order_by(StaffUser.created_at, StaffUser.id)).first()
        owner = connection.execute(
            select(WorkItem.owner_id, func.count()).where(
                WorkItem.is_open.is_(True), WorkItem.owner_id.is_not(None))
            .group_by(WorkItem.owner_id).order_by(func.count().desc())).first()
        accounts = list(connection.execute(select(Account.id).order_by(Account.id)).scalars())
        busiest = [tuple(row) for row in connection.execute(
            select(WorkItem.account_id, func.count()).where(WorkItem.account_id.is_not(None))
            .group_by(WorkItem.account_id).order_by(func.count().desc()).limit(10))]
        items = connection.execute(select(func.count()).select_from(WorkItem)).scalar_one()
        open_items = connection.execute(select(func.count()).select_from(WorkItem).where(
            WorkItem.is_open.is_(True))).scalar_one()
        events = connection.execute(select(func.count()).select_from(ItemEvent)).scalar_one()
    return Facts(StaffAccount(support[0], SIGN_IN_EMAIL, "support"),
                 owner[0], accounts, busiest, items, events, open_items)


def build_app(url: str, workdir: Path):
    secrets = load_secrets(workdir / "keys", {}, generate=True)
    app = create_app({"database_url": url, "secrets": secrets,
                      "secrets_keys_dir": str(workdir / "keys"),
                      "intake_spool_dir": str(workdir / "spool"),
                      "backup_dir": str(workdir / "backups"), "app_log_level": "WARNING"})
    app.config["TESTING"] = True
    return app


def describe(made: Generated, facts: Facts) -> None:
    share = 100 * facts.open_items / facts.items if facts.items else 0
    by_status = ", ".join(f"{status} {count:,}" for status, count in
                          sorted(made.by_status.items(), key=lambda pair: -pair[1]))
    sla = ", ".join(f"{state} {count:,}" for state, count in sorted(made.open_by_sla.items()))
    regions = ", ".join(f"{name} {count:,}" for name, count in sorted(
        made.open_by_region.items()))
    counts = sorted(made.items_per_account.values())
    print(f"  {facts.items:,} items ({share:.0f}% open: {facts.open_items:,}), "
          f"{facts.events:,} events ({facts.events / max(1, facts.items):.1f} per item)")
    print(f"  statuses: {by_status}")
    print(f"  open items by SLA: {sla}; by region: {regions}; "
          f"owned {sum(made.open_by_owner.values()):,}")
    if counts:
        print(f"  items per account: median {statistics.median(counts):.0f}, "
              f"max {counts[-1]:,}, accounts with none "
              f"{len(made.account_ids) - len(counts):,}")


def analyze(engine) -> None:
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))


def sign_in(app, facts: Facts):
    client = app.test_client()
    # Support signs in with a second factor: enrol (again) with a secret the bench knows.
    enrol_two_factor(app, facts.support, reset=True)
    answer = Auth(client).login(facts.support)
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in answered {answer.status_code}, not 302")
    if client.get("/console/").status_code != 200:
        raise RuntimeError("signed in, but /console/ does not answer 200")
    return client


def plan(facts: Facts, args, rng: random.Random) -> tuple[dict[str, Page], list]:
    queue_marker, account_marker = b"<h1>Work queue</h1>", b'id="work-heading"'
    views = {"queue: open (default)": "/console/items",
             "queue: page 2": "/console/items?page=2",
             "queue: region=EMEA": "/console/items?region=EMEA",
             "queue: owner=<staff>": f"/console/items?owner={facts.owner_id}",
             "queue: sla=breached": "/console/items?sla=breached",
             "queue: status=all": "/console/items?status=all"}
    pages = {BASELINE: Page(BASELINE, "baseline", b"<h1>Console</h1>")}
    tasks = [(BASELINE, "/console/")] * args.baseline_samples
    for name, path in views.items():
        pages[name] = Page(name, "queue", queue_marker)
        tasks += [(name, path)] * args.queue_samples
    sample = rng.sample(facts.account_ids, min(args.account_samples, len(facts.account_ids)))
    random_name = f"account: {len(sample)} random"
    busiest_name = f"account: {len(facts.busiest)} busiest"
    pages[random_name] = Page(random_name, "account", account_marker)
    pages[busiest_name] = Page(busiest_name, "account", account_marker)
    tasks += [(random_name, f"/console/accounts/{account_id}") for account_id in sample]
    tasks += [(busiest_name, f"/console/accounts/{account_id}")
              for account_id, _ in facts.busiest] * 3
    rng.shuffle(tasks)
    return pages, tasks


def fetch(client, path: str, page: Page) -> float:
    started = time.perf_counter()
    answer = client.get(path)
    body = answer.get_data()
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200 or page.marker not in body:
        raise RuntimeError(f"GET {path} answered {answer.status_code} without "
                           f"{page.marker!r}:\n{body[:2000].decode(errors='replace')}")
    if page.group == "queue":
        match = QUEUE_TOTAL.search(body)
        page.matched = int(match.group(1)) if match else None
    return elapsed


def measure(client, pages: dict[str, Page], tasks: list, progress: Progress) -> None:
    for name in pages:  # warm-up: templates compiled, caches and pools filled
        path = next(path for task, path in tasks if task == name)
        for _ in range(3):
            fetch(client, path, pages[name])
    progress.start("requests", len(tasks))
    for name, path in tasks:
        pages[name].timings.append(fetch(client, path, pages[name]))
        progress.advance()
    progress.finish()


def profile(client, pages: dict[str, Page], tasks: list, rounds: int) -> None:
    """cProfile of a few requests per page, the top functions by cumulative time."""
    for name in pages:
        if name == BASELINE:
            continue
        paths = [path for task, path in tasks if task == name][:rounds]
        profiler = cProfile.Profile()
        profiler.enable()
        for path in paths:
            fetch(client, path, pages[name])
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(30)
        print(f"\n-- profile: {name}, {len(paths)} requests")
        print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


def run(backend: str, args) -> tuple[dict[str, Page], Facts]:
    progress = Progress()
    rng = random.Random(args.seed)
    if args.reuse:
        workdir = Path(args.reuse)
        url, drop = (workdir / "database_url").read_text().strip(), (lambda: None)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="lifeline-triage-"))
        url, drop = scratch_database(backend, workdir, "triage")
    try:
        engine = make_engine(url)
        if not args.reuse:
            upgrade_database(engine)
        app = build_app(url, workdir)
        if not args.reuse:
            print(f"{backend}: generating {args.accounts:,} accounts and {args.items:,} "
                  "work items")
            made = generate(app, accounts=args.accounts, items=args.items, seed=args.seed,
                            progress=progress)
            analyze(engine)
            facts = read_facts(engine)
            describe(made, facts)
            print(f"  generated in {made.seconds:.0f} s")
        else:
            analyze(engine)
            facts = read_facts(engine)
            print(f"{backend}: reusing {url} ({facts.items:,} items, "
                  f"{len(facts.account_ids):,} accounts)")
        client = sign_in(app, facts)
        pages, tasks = plan(facts, args, rng)
        measure(client, pages, tasks, progress)
        if args.profile:
            profile(client, pages, tasks, args.profile)
        services(app).engine.dispose()
        engine.dispose()
        return pages, facts
    finally:
        if args.keep and not args.reuse:
            (workdir / "database_url").write_text(url)
            print(f"  kept: {workdir} (--reuse {workdir})")
        elif not args.reuse:
            drop()
            shutil.rmtree(workdir, ignore_errors=True)


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def report(results: dict[str, dict[str, Page]]) -> bool:
    print()
    print(f"{'backend':<11}{'page':<26}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}"
          f"{'x base':>8}{'matched':>9}  p50 <= {TARGET_MS:.0f} ms")
    all_met = True
    for backend, pages in results.items():
        base = pages[BASELINE].p50
        for page in pages.values():
            met = page.p50 <= TARGET_MS
            if page.group != "baseline":
                all_met &= met
            matched = f"{page.matched:,}" if page.matched is not None else ""
            print(f"{backend:<11}{page.name:<26}{len(page.timings):>9}{page.p50:>9.1f}"
                  f"{page.p95:>9.1f}{page.p50 / base:>8.1f}{matched:>9}  "
                  f"{'' if page.group == 'baseline' else verdict(met)}")
    print("x base = p50 / the baseline's p50, same client, same run. matched = items in the "
          "queue view (50 a page).")
    for backend, pages in results.items():
        for group, label in (("queue", "queue page"), ("account", "account page")):
            worst = max(page.p50 for page in pages.values() if page.group == group)
            print(f"{backend}: {label} p50 at most {worst:.1f} ms "
                  f"({verdict(worst <= TARGET_MS)}, target <= {TARGET_MS:.0f} ms)")
    return all_met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queue-samples", type=int, default=60, help="requests per view")
    parser.add_argument("--account-samples", type=int, default=200,
                        help="random accounts, one request each")
    parser.add_argument("--baseline-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated database and keys (one backend)")
    parser.add_argument("--reuse", metavar="DIR", help="measure a database kept by --keep")
    parser.add_argument("--profile", type=int, nargs="?", const=5, default=0, metavar="N",
                        help="then cProfile N requests of each page (5)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args()
    if args.accounts < 20 or args.items < 100:
        parser.error("--accounts must be at least 20 and --items at least 100")
    if (args.keep or args.reuse) and args.backend == "both":
        parser.error("--keep and --reuse take one --backend")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks clean up
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"triage benchmark: {args.accounts:,} accounts, {args.items:,} work items; "
          "Flask test client, one request at a time, signed in as a support user")
    results = {}
    for backend in backends:
        results[backend], _ = run(backend, args)
    met = report(results)
    if args.json:
        Path(args.json).write_text(json.dumps({
            backend: {page.name: {"requests": len(page.timings), "p50_ms": page.p50,
                                  "p95_ms": page.p95, "matched": page.matched}
                      for page in pages.values()} for backend, pages in results.items()},
            indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
