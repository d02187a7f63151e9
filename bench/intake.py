"""Intake under load (issue 2): POST /api/v1/requests served by gunicorn (2 workers) and driven
by wrk, against a bare endpoint answering 202 in the same server, measured in the same run.

    .venv/bin/python bench/intake.py                       # 30 s per endpoint, both backends
    .venv/bin/python bench/intake.py --seconds 10 --backend sqlite

Every request carries its own email, and the three intake rate limits are raised out of the
way. It prints req/s, p50 and p99 of both endpoints, the ratio intake/bare (target >= 0.5)
and the intake p99 (target <= 200 ms); then the support_request rows and spool files left
against the 202s answered, to show the requests were really kept. Needs wrk (installed by
scripts/ensure-wrk.sh) and, for PostgreSQL, a server on 127.0.0.1:5432 (a scratch database
is created and dropped here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import text  # noqa: E402
from vault import scratch_database  # noqa: E402

from contacts.core.db import make_engine  # noqa: E402
from contacts.intake.spool import SUFFIX  # noqa: E402

BIN = Path(sys.executable).parent
BARE_PATH = "/api/v1/bench/bare"  # added by bench/intake_app.py
INTAKE_PATH = "/api/v1/requests"
SHARED_LIMITS = "redis://127.0.0.1:6379/13"
NO_LIMIT = "1000000 per minute"
WORKERS = 2
RESULT = "WRK_RESULT "
COMPLAINTS = (" WARNING ", " ERROR ", " CRITICAL ", "[WARNING]", "[ERROR]", "[CRITICAL]",
              "Traceback")

# wrk runs one Lua state per thread: each numbers its own requests, so every email differs
# (per thread and per run); done() runs in the main state and adds up the threads' statuses.
WRK_SCRIPT = """
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  run = args[1]
  sent = 0
  statuses = {}
end

function request()
  sent = sent + 1
  local body = string.format('{"email": "user%d-t%d-%s@bench.example", '
    .. '"message": "Our site has been down since nine this morning."}', sent, thread_id, run)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format('%s{"requests": %d, "duration_us": %d, "p50_us": %.0f, '
    .. '"p99_us": %.0f, "max_us": %.0f, "errors": {"connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d}, "statuses": {%s}}\\n', "RESULT_MARK", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ", ")))
end
""".replace("RESULT_MARK", RESULT)


@dataclass(frozen=True)
class Load:
    """What wrk counted during one run against one endpoint."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]

    @classmethod
    def from_report(cls, report: dict) -> Load:
        return cls(requests=report["requests"], seconds=report["duration_us"] / 1e6,
                   p50_ms=report["p50_us"] / 1000, p99_ms=report["p99_us"] / 1000,
                   max_ms=report["max_us"] / 1000, statuses=report["statuses"],
                   errors=report["errors"])

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def accepted(self) -> int:
        return self.statuses.get("202", 0)

    @property
    def not_accepted(self) -> int:
        return self.requests - self.accepted

    @property
    def socket_errors(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class Server:
    worker_class: str
    threads: int

    def describe(self) -> str:
        threads = f", {self.threads} threads each" if self.worker_class == "gthread" else ""
        return f"gunicorn {WORKERS} workers, {self.worker_class}{threads}"

    def options(self) -> list[str]:
        threads = ["--threads", str(self.threads)] if self.worker_class == "gthread" else []
        return ["--workers", str(WORKERS), "--worker-class", self.worker_class, *threads]


@dataclass(frozen=True)
class Figures:
    backend: str
    bare: Load
    intake: Load
    answered_202: int  # by the intake, warm-up and check included
    cut_off: int  # intake requests still in flight when wrk stopped: at most one per connection
    stored: int
    spooled: int
    server_complaints: list[str]  # the server log's warnings and errors, first few

    @property
    def ratio(self) -> float:
        return self.intake.rate / self.bare.rate


def server_environment(workdir: Path, database_url: str, limits: str) -> dict[str, str]:
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("LIFELINE_") and name not in ("DATABASE_URL", "PORT")}
    return {
        **inherited,
        "LIFELINE_ENV": "development",
        "DATABASE_URL": database_url,
        "LIFELINE_INTAKE_RATE_LIMIT_PER_IP": NO_LIMIT,
        "LIFELINE_INTAKE_RATE_LIMIT_PER_EMAIL": NO_LIMIT,
        "LIFELINE_INTAKE_RATE_LIMIT_PER_DOMAIN": NO_LIMIT,
        # Two worker processes count together only in Redis, as in production (README).
        "LIFELINE_SECURITY_RATE_LIMIT_STORAGE_URI": limits,
        "LIFELINE_SECURITY_RATE_LIMIT_KEY_PREFIX": f"lifeline-bench-{uuid.uuid4().hex[:8]}",
        "LIFELINE_SCHEDULER_ENABLED": "false",
        "LIFELINE_SECRETS_KEYS_DIR": str(workdir / "keys"),
        "LIFELINE_INTAKE_SPOOL_DIR": str(workdir / "spool"),
        "LIFELINE_BACKUP_DIR": str(workdir / "backups"),
    }


def migrate(env: dict[str, str]) -> None:
    """Also generates the development keys, once, before two workers could race to."""
    done = subprocess.run([str(BIN / "flask"), "--app", "app", "db", "upgrade"],  # noqa: S603
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"db upgrade failed:\n{done.stdout}{done.stderr}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post_status(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - http only
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_until_answering(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({server.returncode}):\n{log.read_text()}")
        with contextlib.suppress(OSError):
            status = post_status(url, b"{}")
            if status == 202:
                return
            raise RuntimeError(f"{url} answered {status}, not 202:\n{log.read_text()}")
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer within 60 s:\n{log.read_text()}")


@contextlib.contextmanager
def gunicorn(server: Server, env: dict[str, str], port: int, log: Path):
    """Serve bench/intake_app.py; stopped (and its workers with it) however the run ends."""
    command = [str(BIN / "gunicorn"), *server.options(), "--bind", f"127.0.0.1:{port}",
               "--chdir", str(ROOT), "bench.intake_app:app"]
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output,  # noqa: S603
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answering(process, f"http://127.0.0.1:{port}{BARE_PATH}", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def drive(url: str, script: Path, *, seconds: int, connections: int, threads: int,
          run: str) -> Load:
    command = ["wrk", f"--threads={threads}", f"--connections={connections}",
               f"--duration={seconds}s", "--timeout=10s", f"--script={script}", url, "--", run]
    done = subprocess.run(command, capture_output=True, text=True,  # noqa: S603, S607
                          timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return Load.from_report(json.loads(line.removeprefix(RESULT)))
    raise RuntimeError(f"wrk gave no result ({done.returncode}):\n{done.stdout}{done.stderr}")


def stored_requests(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM support_request")).scalar_one()
    finally:
        engine.dispose()


def complaints(log: Path) -> list[str]:
    lines = log.read_text().splitlines()
    found = [line for line in lines if any(level in line for level in COMPLAINTS)]
    return found[:5] + ([f"... {len(found) - 5} more"] if len(found) > 5 else [])


def measure(backend: str, server: Server, args, script: Path) -> Figures:
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-") as work:
        workdir = Path(work)
        database_url, drop = scratch_database(backend, workdir, "intake")
        try:
            env = server_environment(workdir, database_url, args.limits_storage)
            migrate(env)
            log = workdir / "gunicorn.log"
            with gunicorn(server, env, free_port(), log) as base:
                check = post_status(base + INTAKE_PATH, json.dumps(
                    {"email": "check@bench.example", "message": "Is the intake up?"}).encode())
                if check != 202:
                    raise RuntimeError(f"{INTAKE_PATH} answered {check}:\n{log.read_text()}")
                loads = {}
                for name, path in (("bare", BARE_PATH), ("intake", INTAKE_PATH)):
                    wrk = {"script": script, "connections": args.connections,
                           "threads": args.threads}
                    warm = drive(base + path, seconds=args.warmup, run=f"warm-{name}", **wrk)
                    loads[name] = (warm, drive(base + path, seconds=args.seconds,
                                               run=f"run-{name}", **wrk))
            # Counted once gunicorn has stopped: every answered request has finished by then.
            return Figures(backend=backend, bare=loads["bare"][1], intake=loads["intake"][1],
                           answered_202=1 + sum(load.accepted for load in loads["intake"]),
                           cut_off=len(loads["intake"]) * args.connections,
                           stored=stored_requests(database_url),
                           spooled=len(list((workdir / "spool").glob(f"*{SUFFIX}"))),
                           server_complaints=complaints(log))
        finally:
            drop()


def print_report(figures: list[Figures], server: Server) -> None:
    print(f"{'backend':<11}{'endpoint':<9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>9}"
          f"{'non-202':>9}{'errors':>8}")
    for f in figures:
        for name, load in (("bare", f.bare), ("intake", f.intake)):
            print(f"{f.backend:<11}{name:<9}{load.rate:>8,.0f}{load.p50_ms:>8.1f}"
                  f"{load.p99_ms:>8.1f}{load.max_ms:>9.1f}{load.not_accepted:>9,}"
                  f"{load.socket_errors:>8,}")
    print()
    print(f"{'backend':<11}{'ratio':>6}  {'(>= 0.5)':<9}{'intake p99':>11}  {'(<= 200 ms)':<12}"
          f"{'202s':>8}{'rows':>8}{'spooled':>9}")
    for f in figures:
        print(f"{f.backend:<11}{f.ratio:>6.2f}  {verdict(f.ratio >= 0.5):<9}"
              f"{f.intake.p99_ms:>8.1f} ms  {verdict(f.intake.p99_ms <= 200):<12}"
              f"{f.answered_202:>8,}{f.stored:>8,}{f.spooled:>9,}")
    print(f"ratio = intake req/s / bare req/s, same server ({server.describe()}), same run. "
          "202s = intake answers wrk counted (warm-up and check included); rows = "
          "support_request rows after the run; spooled = requests left in the spool. Rows + "
          "spooled may exceed the 202s by the requests in flight when wrk stopped (at most one "
          "per connection per wrk run).")


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def problems(figures: list[Figures]) -> list[str]:
    found = []
    for f in figures:
        for name, load in (("bare", f.bare), ("intake", f.intake)):
            if load.not_accepted or load.socket_errors:
                statuses = {status: count for status, count in load.statuses.items()
                            if status != "202"}
                found.append(f"{f.backend} {name}: statuses {statuses}, errors {load.errors}")
        kept = f.stored + f.spooled
        if not f.answered_202 <= kept <= f.answered_202 + f.cut_off:
            found.append(f"{f.backend}: {f.answered_202:,} requests answered 202 but {kept:,} "
                         f"kept (rows + spool files; up to {f.cut_off} more may be in flight)")
        found += [f"{f.backend} server log: {line}" for line in f.server_complaints]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30, help="measured, per endpoint")
    parser.add_argument("--warmup", type=int, default=3, help="seconds, per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    # gthread lets the intake's group commit see concurrent requests; sync gave the same bare
    # rate (p99 ~25 ms lower) but a lower intake rate; 16 threads did no better than 8.
    parser.add_argument("--worker-class", choices=["sync", "gthread"], default="gthread")
    parser.add_argument("--limits-storage", default=SHARED_LIMITS,
                        help="rate-limit counters: Redis (shared by the workers, as in "
                             "production) or memory:// (each worker its own)")
    parser.add_argument("--worker-threads", type=int, default=8, help="per gthread worker")
    args = parser.parse_args()
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    # Stopped with SIGTERM as with Ctrl-C: the finally blocks stop gunicorn, drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-wrk.sh")], check=True)  # noqa: S603, S607
    server = Server(args.worker_class, args.worker_threads)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"intake benchmark: {server.describe()}; wrk {args.threads} threads, "
          f"{args.connections} connections, {args.warmup} s warm-up + {args.seconds} s "
          f"per endpoint; rate-limit counters in {args.limits_storage}")
    with tempfile.TemporaryDirectory(prefix="lifeline-wrk-") as work:
        script = Path(work) / "intake.lua"
        script.write_text(WRK_SCRIPT)
        figures = [measure(backend, server, args, script) for backend in backends]
    print_report(figures, server)
    found = problems(figures)
    for problem in found:
        print(f"PROBLEM: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
