"""A real Dovecot for the inbound tests and the benchmark: started in the foreground with a
configuration of its own (free 127.0.0.1 ports for IMAP with STARTTLS and for IMAPS, a
self-signed certificate, a scratch Maildir, a passwd-file user, its own base and state
folders), so it never touches the machine's Dovecot; messages delivered as real RFC 5322
bytes by IMAP APPEND or by Dovecot's own dovecot-lda; a folder's messages listed."""

from __future__ import annotations

import datetime as dt
import imaplib
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from contacts.drill.mailstore import dovecot_configuration, free_port, mail_user_of_files

DOVECOT = os.environ.get("LIFELINE_DOVECOT", "/usr/sbin/dovecot")
DOVECOT_LDA = os.environ.get("LIFELINE_DOVECOT_LDA", "/usr/lib/dovecot/dovecot-lda")
USER = "lifeline@example.test"
PASSWORD = "imap test password"
START_SECONDS = 20


class DovecotUnavailable(RuntimeError):
    """Dovecot is not installed here (scripts/ensure-dovecot.sh installs it)."""


class DovecotFailed(RuntimeError):
    """Dovecot was found but did not start; the message holds its log."""


def dovecot_missing() -> str | None:
    """Why Dovecot cannot run here, or None."""
    for path in (DOVECOT, DOVECOT_LDA):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (bash scripts/ensure-dovecot.sh installs dovecot-imapd)"
    return None


@dataclass
class Dovecot:
    """One running server: `imap_port` (plain, STARTTLS offered) and `imaps_port`."""

    root: Path
    imap_port: int = 0
    imaps_port: int = 0
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def cert_file(self) -> Path:
        return self.root / "cert.pem"

    @property
    def output_file(self) -> Path:
        return self.root / "dovecot.out"

    @property
    def log_file(self) -> Path:
        return self.root / "dovecot.log"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's certificate (and checks the name)."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    # -- the mail in it ------------------------------------------------------------------

    def connect(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
        client.login(self.user, self.password)
        return client

    def append(self, messages: list[bytes] | bytes, folder: str = "INBOX") -> None:
        """Deliver real bytes by IMAP APPEND, in one session."""
        if isinstance(messages, bytes):
            messages = [messages]
        client = self.connect()
        try:
            for raw in messages:
                typ, data = client.append(_quoted(folder), None, None, raw)
                if typ != "OK":
                    raise RuntimeError(f"APPEND refused: {data!r}")
        finally:
            client.logout()

    def deliver(self, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver as the mail server would, with dovecot-lda reading the message on stdin."""
        result = subprocess.run([DOVECOT_LDA, "-c", str(self.config), "-d", self.user,
                                 "-m", folder], input=raw, capture_output=True, timeout=30,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"dovecot-lda exited {result.returncode}: "
                               f"{result.stderr.decode(errors='replace')}\n{self.log()}")

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """Every message of `folder`, as bytes, in UID order (peeked: nothing marked)."""
        client = self.connect()
        try:
            typ, _ = client.select(_quoted(folder), readonly=True)
            if typ != "OK":
                return []
            typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
            return [item[1] for item in data or () if isinstance(item, tuple)]
        finally:
            client.logout()

    def count(self, folder: str = "INBOX") -> int:
        client = self.connect()
        try:
            typ, data = client.status(_quoted(folder), "(MESSAGES)")
            if typ != "OK":
                return 0
            return int(data[0].decode().rsplit("MESSAGES", 1)[1].strip(" )"))
        finally:
            client.logout()

    def folders(self) -> list[str]:
        client = self.connect()
        try:
            _, data = client.list()
            return [line.decode().rsplit(' "', 1)[1].rstrip('"') if line.endswith(b'"')
                    else line.decode().rsplit(" ", 1)[1] for line in data if line]
        finally:
            client.logout()

    def empty(self) -> None:
        """Every folder emptied and the Lifeline folders removed, for the next test."""
        client = self.connect()
        try:
            _, data = client.list()
            names = []
            for line in data or ():
                name = line.decode().rsplit(" ", 1)[1].strip('"')
                names.append(name)
            for name in names:
                typ, count = client.select(_quoted(name))
                if typ != "OK":
                    continue  # a parent that holds no mail (\Noselect)
                if int(count[0] or 0):
                    client.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
                    client.expunge()
                client.close()
            for name in sorted(names, key=len, reverse=True):
                if name != "INBOX":
                    client.delete(_quoted(name))
        finally:
            client.logout()

    # -- running -------------------------------------------------------------------------

    def start(self) -> Dovecot:
        for attempt in range(3):
            self.imap_port, self.imaps_port = free_port(), free_port()
            self.config.write_text(_configuration(self))
            self.log_file.write_text("")
            # Into a file, not a pipe: Dovecot's children inherit it and would hold a pipe.
            with self.output_file.open("wb") as output:
                self.process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config)],
                                                stdout=output, stderr=subprocess.STDOUT)
            try:
                self._wait_until_listening()
                return self
            except DovecotFailed:
                output = self.stop()
                if attempt == 2 or "Address already in use" not in output + self.log():
                    raise DovecotFailed(f"Dovecot did not start: {output}\n{self.log()}"
                                        ) from None
        raise AssertionError("unreachable")

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        waiting = [self.imap_port, self.imaps_port]
        while waiting:
            if self.process.poll() is not None:
                raise DovecotFailed(f"exited {self.process.returncode}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=1) as probe:
                    if waiting[0] == self.imap_port:
                        probe.recv(1)  # the greeting: the login process answers
                waiting.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise DovecotFailed(f"port {waiting[0]} not listening after "
                                        f"{START_SECONDS} s") from None
                time.sleep(0.05)

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL); returns what it printed."""
        if self.process is None:
            return ""
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        try:
            return self.output_file.read_text(errors="replace")
        except OSError:
            return ""


def start_dovecot(root: Path | None = None) -> Dovecot:
    """A started Dovecot in a scratch folder of its own (`root`, else a new one in /tmp)."""
    missing = dovecot_missing()
    if missing:
        raise DovecotUnavailable(missing)
    made = root is None
    root = Path(root or tempfile.mkdtemp(prefix="lifeline-dovecot-"))
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 - the mail and login users traverse it
    mail_user = mail_user_of_files()
    for name in ("home", "run", "state"):
        (root / name).mkdir(exist_ok=True)
    os.chown(root / "home", mail_user.pw_uid, mail_user.pw_gid)
    _write_certificate(root)
    (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
    try:
        return Dovecot(root).start()
    except DovecotFailed:
        if made:
            shutil.rmtree(root, ignore_errors=True)
        raise


def remove(server: Dovecot) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _configuration(server: Dovecot) -> str:
    return dovecot_configuration(server.root, server.log_file,
                                 f"lifeline-test-{server.imap_port}",
                                 imap_port=server.imap_port, imaps_port=server.imaps_port,
                                 lda=True)


def _write_certificate(root: Path) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost, made with `cryptography`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lifeline test IMAP")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    (root / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file = root / "key.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
