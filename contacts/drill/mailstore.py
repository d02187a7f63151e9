"""The drill's receiving mail server: a Dovecot of its own (IMAP on a free 127.0.0.1 port, a
scratch Maildir, one passwd-file user, its own base and state folders, so it never touches
the machine's Dovecot), which the local Lifeline reads as its `[inbound]` mailbox and into
which the drill APPENDs what customers' servers would deliver."""

from __future__ import annotations

import getpass
import grp
import imaplib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = os.environ.get("LIFELINE_DOVECOT", "/usr/sbin/dovecot")
START_SECONDS = 20


class MailstoreUnavailable(RuntimeError):
    """Dovecot is not installed (Debian's dovecot-imapd; scripts/ensure-dovecot.sh)."""


class Mailstore:
    """One Dovecot in a scratch folder of its own under the system's temporary folder
    (Dovecot's users must traverse every parent, which a drill's private workdir forbids),
    holding one user's mailbox (`username`, `password`); removed by `stop`."""

    def __init__(self, *, username: str = "support@lifeline.drill.example"):
        self.root = Path(tempfile.mkdtemp(prefix="lifeline-drill-mail-"))
        self.username = username
        self.password = secrets.token_urlsafe(18)
        self.host = "127.0.0.1"
        self.port = 0
        self._process: subprocess.Popen | None = None

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    def start(self) -> Mailstore:
        if not os.access(DOVECOT, os.X_OK):
            raise MailstoreUnavailable(f"{DOVECOT} is missing (bash scripts/ensure-dovecot.sh "
                                       "installs dovecot-imapd)")
        os.chmod(self.root, 0o755)  # noqa: S103 - the mail and login users traverse it
        mail_user = mail_user_of_files()
        for name in ("home", "run", "state"):
            (self.root / name).mkdir(exist_ok=True)
        os.chown(self.root / "home", mail_user.pw_uid, mail_user.pw_gid)
        users = self.root / "users"
        users.write_text(f"{self.username}:{{PLAIN}}{self.password}::::::\n")
        users.chmod(0o600)  # read by Dovecot's auth process, as its internal user
        internal = pwd.getpwnam(service_users()[0])
        os.chown(users, internal.pw_uid, internal.pw_gid)
        for attempt in range(3):
            self.port = free_port()
            (self.root / "dovecot.conf").write_text(self._configuration())
            # Into a file, not a pipe: Dovecot's children inherit it and would hold a pipe.
            with (self.root / "dovecot.out").open("wb") as output:
                self._process = subprocess.Popen(  # noqa: S603 - the system's Dovecot
                    [DOVECOT, "-F", "-c", str(self.root / "dovecot.conf")],
                    stdout=output, stderr=subprocess.STDOUT)
            if self._wait_until_listening():
                return self
            self._halt()
            if attempt == 2:
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() \
                    else ""
                raise RuntimeError(f"Dovecot did not start: {log[-1500:]}")
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its folder and mail."""
        self._halt()
        shutil.rmtree(self.root, ignore_errors=True)

    def _halt(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def append(self, messages: list[bytes]) -> None:
        """Deliver real bytes into INBOX by IMAP APPEND, in one session."""
        client = self._connect()
        try:
            for raw in messages:
                typ, data = client.append("INBOX", None, None, raw)
                if typ != "OK":
                    raise RuntimeError(f"APPEND refused: {data!r}")
        finally:
            client.logout()

    def count_folder(self, *levels: str) -> int:
        """Messages in the folder of these levels (Lifeline makes "Lifeline/Failed" in the
        server's own separator); 0 when it does not exist yet."""
        client = self._connect()
        try:
            for separator in ("/", "."):
                typ, data = client.status(f'"{separator.join(levels)}"', "(MESSAGES)")
                if typ == "OK":
                    return int(data[0].decode().rsplit("MESSAGES", 1)[1].strip(" )"))
            return 0
        finally:
            client.logout()

    def _connect(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.port, timeout=30)
        client.login(self.username, self.password)
        return client

    def _wait_until_listening(self) -> bool:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as probe:
                    probe.recv(1)  # the greeting: the login process answers
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def _configuration(self) -> str:
        # No TLS: only 127.0.0.1 listens, and Lifeline reads it with security = "none".
        return dovecot_configuration(self.root, self.log_file, f"lifeline-drill-{self.port}",
                                     imap_port=self.port)


def dovecot_configuration(root: Path, log_file: Path, instance: str, *, imap_port: int,
                          imaps_port: int | None = None, lda: bool = False) -> str:
    """The configuration of a private Dovecot: its own folders under `root`, IMAP on
    127.0.0.1 only, users from `root/users` (plain passwords), Maildirs owned by
    `mail_user()`. With `imaps_port`, TLS as well (`root/cert.pem`, `root/key.pem`: STARTTLS
    on the IMAP port, implicit TLS on that one); `lda`: dovecot-lda may deliver into it.
    Also used by the tests' Dovecot (tests/inbound/dovecot.py)."""
    mail_user = mail_user_of_files()
    internal, internal_group, login = service_users()
    tls = (f"ssl = yes\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem\n"
           "ssl_min_protocol = TLSv1.2\n") if imaps_port else "ssl = no\n"
    imaps = (f"address = 127.0.0.1\n    port = {imaps_port}\n    ssl = yes"
             if imaps_port else "port = 0")
    delivery = "protocol lda {\n  postmaster_address = postmaster@example.test\n}\n" \
        if lda else ""
    return f"""# Written by contacts/drill/mailstore.py.
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {log_file}
info_log_path = {log_file}
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
{tls}disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
mail_privileged_group =
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
{delivery}"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mail_user_of_files() -> pwd.struct_passwd:
    """Whom the mail files belong to: ourselves, or `nobody` when we are root (Dovecot
    refuses to access mail as root)."""
    if os.geteuid() == 0:
        return pwd.getpwnam("nobody")
    return pwd.getpwuid(os.geteuid())


def service_users() -> tuple[str, str, str]:
    """(internal user, its group, login user): Debian's when we are root, else ourselves."""
    if os.geteuid() == 0:
        internal = pwd.getpwnam("dovecot")
        return internal.pw_name, grp.getgrgid(internal.pw_gid).gr_name, "dovenull"
    me = getpass.getuser()
    return me, grp.getgrgid(os.getegid()).gr_name, me
