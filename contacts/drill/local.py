"""A Lifeline of the drill's own: a separate `flask serve` process on a scratch database (a
SQLite file, or a new PostgreSQL database dropped afterwards), its mail sent to the drill's
sink, its `[inbound]` mailbox the drill's Dovecot (when given one), its jobs run every second
so the drill does not wait on them."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy.engine import make_url

from contacts.core.access import SCOPES
from contacts.drill.letters import MX
from contacts.drill.mailstore import Mailstore

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAIL_DOMAIN = "lifeline.drill.example"
REPLY_TO = f"support@{MAIL_DOMAIN}"  # each reply address: support+<token>@
RETURN_PATH = f"bounces@{MAIL_DOMAIN}"  # each envelope sender: bounces+m<id>.<sig>@
FLASK = [sys.executable, "-m", "flask", "--app", "app"]


class LocalLifeline:
    def __init__(self, *, workdir: Path, smtp_port: int, database_url: str | None,
                 redis_url: str | None = None, mailstore: Mailstore | None = None):
        self.workdir = workdir
        self.mailstore = mailstore  # read as the `[inbound]` mailbox "drill"
        # Rate-limit counters in this Redis under a prefix of their own (scanned, then
        # removed), instead of the server's memory, where no scan can read them.
        self.redis_url = redis_url
        self.limiter_prefix = f"lifeline-drill-{secrets.token_hex(4)}"
        self.smtp_port = smtp_port
        self.server_url = database_url  # a PostgreSQL server to make a scratch database on
        self.database_url = ""
        self.log_path = workdir / "server.log"
        self.backup_dir = workdir / "backups"
        self.spool_dir = workdir / "spool"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._scratch_database: str | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    def environment(self) -> dict[str, str]:
        inherited = {name: value for name, value in os.environ.items()
                     if not name.startswith("LIFELINE_") and name not in ("DATABASE_URL", "PORT")}
        return {
            **inherited,
            "LIFELINE_ENV": "development",
            "DATABASE_URL": self.database_url,
            "LIFELINE_APP_BASE_URL": self.base_url,
            "LIFELINE_INCIDENTS_SUPPORT_URL": self.base_url + "/contact",
            "LIFELINE_INCIDENTS_COMMS_INBOX": "comms@lifeline.drill.example",
            "LIFELINE_SECRETS_KEYS_DIR": str(self.workdir / "keys"),
            "LIFELINE_INTAKE_SPOOL_DIR": str(self.spool_dir),
            "LIFELINE_BACKUP_DIR": str(self.backup_dir),
            "LIFELINE_BACKUP_INTERVAL_HOURS": "0",
            "LIFELINE_BACKUP_DRILL_INTERVAL_HOURS": "0",
            "LIFELINE_MAIL_HOST": "127.0.0.1",
            "LIFELINE_MAIL_PORT": str(self.smtp_port),
            "LIFELINE_MAIL_SENDER": "Lifeline <lifeline@lifeline.drill.example>",
            # The crowd comes through a proxy that names each visitor's address.
            "LIFELINE_SERVER_PROXY_HOPS": "1",
            "LIFELINE_INTAKE_PROCESS_SECONDS": "1",
            "LIFELINE_DELIVERY_DRAIN_SECONDS": "1",
            "LIFELINE_ESCALATIONS_SYNC_SECONDS": "1",
            "LIFELINE_ESCALATIONS_SLA_CHECK_SECONDS": "5",
            "LIFELINE_INCIDENTS_CADENCE_CHECK_SECONDS": "1",
            "LIFELINE_SCHEDULER_HEARTBEAT_SECONDS": "5",
            "LIFELINE_MAIL_REPLY_TO": REPLY_TO,
            "LIFELINE_MAIL_RETURN_PATH": RETURN_PATH,
            **self._inbound(),
            **({"LIFELINE_SECURITY_RATE_LIMIT_STORAGE_URI": self.redis_url,
                "LIFELINE_SECURITY_RATE_LIMIT_KEY_PREFIX": self.limiter_prefix}
               if self.redis_url else {}),
        }

    def _inbound(self) -> dict[str, str]:
        """The drill's Dovecot as the one `[inbound]` mailbox, in a config file of the
        drill's (an environment variable cannot hold the table), read every second; the MX
        that stamps what the drill delivers is the one trusted authserv-id."""
        if self.mailstore is None:
            return {}
        config = self.workdir / "inbound.toml"
        config.write_text(
            "[inbound]\n"
            f'mailboxes = [{{ name = "drill", host = "{self.mailstore.host}", '
            f'port = {self.mailstore.port}, security = "none", '
            f'username = "{self.mailstore.username}", folder = "INBOX" }}]\n'
            f'trusted_authserv_ids = ["{MX}"]\n'
            "poll_seconds = 1\n")
        return {"LIFELINE_CONFIG": str(config),
                "LIFELINE_INBOUND_DRILL_PASSWORD": self.mailstore.password}

    def start(self) -> str:
        """Migrate, make an admin token with every scope, serve; the token."""
        self.database_url = self._make_database()
        environment = self.environment()
        self._run([*FLASK, "db", "upgrade"], environment)
        created = self._run([*FLASK, "tokens", "create", "drill",
                             *[part for scope in SCOPES for part in ("--scope", scope)]],
                            environment)
        token = created.strip().splitlines()[-1]
        self._log = self.log_path.open("a")
        self._process = subprocess.Popen(  # noqa: S603 - our own CLI
            [*FLASK, "serve", "--port", str(self.port)], cwd=PROJECT_ROOT, env=environment,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_healthy()
        return token

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def drop_database(self) -> None:
        if self._scratch_database is None:
            return
        import psycopg

        with psycopg.connect(_libpq(self.server_url), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self._scratch_database}" '
                               "WITH (FORCE)")
        self._scratch_database = None

    def stored_bytes(self) -> bytes:
        """What the database holds, as bytes: the SQLite file and its WAL, or a pg_dump."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite":
            files = [Path(url.database), Path(url.database + "-wal")]
            return b"".join(path.read_bytes() for path in files if path.exists())
        command = ["pg_dump", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432),
                   "-U", url.username or "postgres", url.database]
        return subprocess.run(command, capture_output=True, check=True,  # noqa: S603
                              timeout=300).stdout

    def limiter_keys(self) -> dict[str, bytes]:
        """The rate limiter's keys in Redis, one a line (none with the memory storage)."""
        if not self.redis_url:
            return {}
        import redis

        store = redis.Redis.from_url(self.redis_url)
        keys = sorted(store.scan_iter(match=f"{self.limiter_prefix}*", count=1000))
        return {"rate-limit keys (Redis)": b"\n".join(keys)}

    def drop_limiter_keys(self) -> None:
        if not self.redis_url:
            return
        import redis

        store = redis.Redis.from_url(self.redis_url)
        for key in store.scan_iter(match=f"{self.limiter_prefix}*", count=1000):
            store.delete(key)

    def files_at_rest(self) -> dict[str, bytes]:
        """Every file the instance wrote besides its database: logs, backups, the spool."""
        found = {"server log": self.log_path.read_bytes() if self.log_path.exists() else b""}
        for folder in (self.backup_dir, self.spool_dir):
            if folder.exists():
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        found[str(path.relative_to(self.workdir))] = path.read_bytes()
        return found

    def _make_database(self) -> str:
        if not self.server_url:
            return f"sqlite:///{self.workdir / 'lifeline.db'}"
        import psycopg

        name = f"lifeline_drill_{secrets.token_hex(4)}"
        with psycopg.connect(_libpq(self.server_url), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self._scratch_database = name
        return make_url(self.server_url).set(drivername="postgresql+psycopg",
                                             database=name).render_as_string(hide_password=False)

    def _run(self, command: list[str], environment: dict[str, str]) -> str:
        done = subprocess.run(command, cwd=PROJECT_ROOT, env=environment,  # noqa: S603
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[3:])} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the local Lifeline exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz",  # noqa: S310
                                            timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # answering, if not yet healthy (no backup drill has run)
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the local Lifeline did not answer within 60 s; see {self.log_path}")


def _libpq(url: str) -> str:
    """psycopg's form of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def free_port() -> int:
    """A TCP port nothing on 127.0.0.1 listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
