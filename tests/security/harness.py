"""What the outsider probe stands on: the drill's local Lifeline (with extra settings and a
staff account), the drill's SMTP sink keeping each message's text, webhook endpoints on
127.0.0.1 (one answers a byte a second, one redirects), raw HTTP (chunked bodies, exact
bytes), and a console session signed in through the login form (with a TOTP second factor
when the page asks for one and shows its secret)."""

from __future__ import annotations

import base64
import hmac
import http.client
import itertools
import re
import secrets
import select
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser
from pathlib import Path

from contacts.drill.client import Answer, Client, Visitor
from contacts.drill.local import FLASK, PROJECT_ROOT, LocalLifeline
from contacts.drill.sink import Sink

# The explicit allowance for a webhook receiver on a private address (issue 16, item 3):
# a list of "host:port" the SSRF guard lets through. One name, so it is easy to adjust.
ALLOWANCE_VARIABLE = "LIFELINE_WEBHOOKS_ALLOW_PRIVATE_HOSTS"

# Documentation networks (RFC 5737): only ever sent as X-Forwarded-For data, never dialled.
CLIENT_NETWORKS = ("203.0.113", "198.51.100", "192.0.2")


def client_ips():
    """A new client address per request, so per-address limits never decide a probe."""
    for network in itertools.cycle(CLIENT_NETWORKS):
        for host in range(1, 255):
            yield f"{network}.{host}"


# -- mail -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letter:
    recipient: str
    subject: str
    text: str
    at: float  # time.monotonic() when the sink accepted it


class MailSink(Sink):
    """The drill's sink, also keeping each message's plain-text body: the probe reads codes
    and links from the body (the subject need not carry the code)."""

    def __init__(self):
        super().__init__()
        self.letters: list[Letter] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        part = message.get_body(preferencelist=("plain",))
        text = part.get_content() if part is not None else ""
        now = time.monotonic()
        with self._lock:
            for recipient in envelope.rcpt_tos:
                self.letters.append(Letter(recipient.lower(), str(message["Subject"] or ""),
                                           text, now))
        return answer

    def letters_to(self, address: str) -> list[Letter]:
        with self._lock:
            return [letter for letter in self.letters if letter.recipient == address.lower()]

    def wait_for_letter(self, address: str, containing: str, *, timeout: float
                        ) -> Letter | None:
        deadline = time.monotonic() + timeout
        while True:
            for letter in self.letters_to(address):
                if containing in letter.subject or containing in letter.text:
                    return letter
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)


CODE_LINE = re.compile(r"^\s*(\d{6})\s*$", re.MULTILINE)
CONFIRM_PATH = re.compile(r"/requests/(LL-[0-9A-Z]{4}-[0-9A-Z]{4})/confirm/([A-Za-z0-9._\-]+)")


def code_of(letter: Letter) -> str | None:
    found = CODE_LINE.search(letter.text)
    return found.group(1) if found else None


def confirm_path_of(letter: Letter) -> str | None:
    found = CONFIRM_PATH.search(letter.text)
    return found.group(0) if found else None


# -- webhook endpoints ---------------------------------------------------------------------


@dataclass
class Call:
    path: str
    head: bytes  # the request line and headers
    at: float  # time.monotonic() when the connection was accepted
    closed_at: float | None = None  # when the caller hung up while the answer trickled


class Receiver:
    """Webhook endpoints on 127.0.0.1. /hook answers one byte a second for `seconds` (a
    header that never ends) while `trickling` is set, as the slow endpoint of issue 16 did,
    and at once after; /redirect sends the caller on to `redirect_to`; anything else
    answers 200."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, seconds: float = 60):
        self.host, self.port, self.seconds = host, port, seconds
        self.calls: list[Call] = []
        self.redirect_to = ""
        self.trickling = threading.Event()
        self.trickling.set()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def receiver(self) -> str:
        return f"{self.host}:{self.port}"

    def calls_to(self, path: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.path == path]

    def start(self) -> None:
        self._listener = socket.create_server((self.host, self.port))
        self._listener.settimeout(0.5)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="receiver").start()

    def stop_trickling(self) -> None:
        """Finish every trickling answer within a second; answer /hook at once from now."""
        self.trickling.clear()

    def stop(self) -> None:
        self.trickling.clear()
        self._stop.set()
        with self._lock:
            for sock in [self._listener, *self._clients]:
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
            self._clients.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._answer, args=(client, time.monotonic()),
                             daemon=True).start()

    def _answer(self, client: socket.socket, at: float) -> None:
        try:
            client.settimeout(5)
            head = _read_request(client)
            path = head.split(b" ", 2)[1].decode(errors="replace") if head.count(b" ") else ""
            call = Call(path=path, head=head, at=at)
            with self._lock:
                self.calls.append(call)
            if path == "/redirect":
                client.sendall(f"HTTP/1.1 302 Found\r\nLocation: {self.redirect_to}\r\n"
                               "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
            elif path == "/hook" and self.trickling.is_set():
                self._trickle(client, call)
            else:
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass

    def _trickle(self, client: socket.socket, call: Call) -> None:
        head = b"HTTP/1.1 200 OK\r\nX-Slow: "
        deadline = time.monotonic() + self.seconds
        sent = 0
        try:
            while time.monotonic() < deadline and self.trickling.is_set():
                readable, _, _ = select.select([client], [], [], 1.0)
                if readable and not client.recv(4096):
                    call.closed_at = time.monotonic()  # the caller gave up
                    return
                client.sendall(head[sent:sent + 1] if sent < len(head) else b"a")
                sent += 1
            client.sendall(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            call.closed_at = time.monotonic()


def _read_request(client: socket.socket) -> bytes:
    """Read one request (head and Content-Length body); its head."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = client.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    missing = int(length.group(1)) - len(body) if length else 0
    while missing > 0:
        chunk = client.recv(min(missing, 65536))
        if not chunk:
            break
        missing -= len(chunk)
    return head


# -- raw HTTP ----------------------------------------------------------------------------


def send(base_url: str, method: str, path: str, body: bytes, *,
         content_type: str = "application/json", chunked: bool = False,
         headers: dict[str, str] | None = None, timeout: float = 30) -> Answer:
    """Exactly these bytes, with a Content-Length or as chunks of 16 KB; status 0 when the
    server closed the connection without an answer."""
    parts = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    all_headers = {"Content-Type": content_type, "Accept": "application/json",
                   **(headers or {})}
    try:
        try:
            connection.putrequest(method, path)
            for name, value in all_headers.items():
                connection.putheader(name, value)
            if chunked:
                connection.putheader("Transfer-Encoding", "chunked")
                connection.endheaders()
                for start in range(0, len(body), 16384):
                    piece = body[start:start + 16384]
                    connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                connection.send(b"0\r\n\r\n")
            else:
                connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body)
        except OSError:
            pass  # the server may answer (413) before it has read everything
        try:
            response = connection.getresponse()
            return Answer(response.status, response.read(), response.getheader("Location"))
        except (http.client.HTTPException, OSError) as exc:
            return Answer(0, f"no answer: {type(exc).__name__}: {exc}".encode())
    finally:
        connection.close()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
              ) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "probe" + secrets.token_hex(12)
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [f"--{boundary}".encode(),
                  f'Content-Disposition: form-data; name="{name}"'.encode(), b"",
                  value.encode()]
    for name, (filename, content, mimetype) in files.items():
        lines += [f"--{boundary}".encode(),
                  f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'
                  .encode(), f"Content-Type: {mimetype}".encode(), b"", content]
    lines += [f"--{boundary}--".encode(), b""]
    return b"\r\n".join(lines), f"multipart/form-data; boundary={boundary}"


# -- the console -------------------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type) of each


class _Forms(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.open = False

    def handle_endtag(self, tag):
        if tag == "form":
            self.open = False

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        if tag == "form":
            self.forms.append(Form(named.get("action") or "", (named.get("method") or "get")
                                   .lower()))
            self.open = True
        elif tag in ("input", "textarea", "select") and self.open and named.get("name"):
            kind = (named.get("type") or "text").lower() if tag == "input" else tag
            form = self.forms[-1]
            form.inputs.append((named["name"], kind))
            if kind not in ("checkbox", "radio", "submit"):
                form.fields[named["name"]] = named.get("value") or ""


def forms_of(page: bytes) -> list[Form]:
    parser = _Forms()
    parser.feed(page.decode("utf-8", errors="replace"))
    return parser.forms


TOTP_URI_SECRET = re.compile(r"otpauth://totp/[^\"'<>\s]*?[?&](?:amp;)?secret=([A-Z2-7]+)",
                             re.IGNORECASE)
SECRET_FIELD = re.compile(r'<input[^>]*(?:id|name|class)="[^"]*(?:secret|totp)[^"]*"[^>]*'
                          r'value="([A-Z2-7 ]{16,})"', re.IGNORECASE)
BASE32_RUN = re.compile(r"\b((?:[A-Z2-7]{4}[ \-]?){4,}[A-Z2-7]*)\b")
CODE_FIELD = re.compile(r"code|otp|totp|token", re.IGNORECASE)


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238 with the usual parameters: SHA-1, 30 s, 6 digits."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), "sha1").digest()
    offset = digest[-1] & 15
    value = (int.from_bytes(digest[offset:offset + 4], "big") & 0x7FFFFFFF) % 1_000_000
    return f"{value:06d}"


def totp_secret_on(page: bytes) -> str | None:
    """The TOTP secret an enrolment page shows: in a field named for it, in an otpauth://
    URI, or as the page's one long run of base32."""
    text = page.decode("utf-8", errors="replace")
    found = (SECRET_FIELD.search(text) or TOTP_URI_SECRET.search(text)
             or BASE32_RUN.search(text))
    return re.sub(r"[ \-]", "", found.group(1)).upper() if found else None


def second_factor_form(page: bytes) -> tuple[Form, str] | None:
    """The page's form asking for a one-time code, and the name of its code field."""
    for form in forms_of(page):
        for name, kind in form.inputs:
            if (kind in ("text", "number", "tel", "password") and name != "csrf_token"
                    and CODE_FIELD.search(name)):
                return form, name
    return None


class Console:
    """A staff member's browser session on the console."""

    def __init__(self, base_url: str, client_ip: str, *, timeout: float = 30):
        self.client = Client(base_url, timeout=timeout)
        self.visitor = Visitor(self.client, client_ip)
        self.signed_in = False

    def path_of(self, location: str | None) -> str:
        if not location:
            return ""
        if location.startswith(self.client.base_url):
            return location[len(self.client.base_url):] or "/"
        return location if location.startswith("/") else "/" + location

    def follow(self, answer: Answer, hops: int = 5) -> Answer:
        while answer.status in (301, 302, 303, 307, 308) and answer.location and hops:
            answer = self.visitor.get(self.path_of(answer.location))
            hops -= 1
        return answer

    def sign_in(self, email: str, password: str, totp_secret: str | None = None) -> str:
        """Sign in through /login, and its second step when the page asks for a one-time
        code (enrolment shows the secret; else `totp_secret`); '' when the console opens,
        else why not."""
        page = self.follow(self.visitor.submit("/login", {"email": email,
                                                          "password": password}))
        if page.status in (401, 429):
            return f"the login form answered {page.status}"
        secret = totp_secret
        for _ in range(3):
            found = second_factor_form(page.body)
            if found is not None:
                secret = secret or totp_secret_on(page.body)
                if secret is None:
                    return ("the console asks for a second factor and the probe has no TOTP "
                            "secret (give --totp-secret)")
                page = self._post_code(*found, secret)
                if page.status >= 400:
                    return (f"the second-factor form answered {page.status}: "
                            f"{page.body[:200].decode(errors='replace')}")
            home = self.visitor.get("/console/")
            if home.status == 200:
                self.signed_in = True
                return ""
            page = self.follow(home)
        return f"the console did not open (the last page answered {page.status})"

    def _post_code(self, form: Form, code_field: str, secret: str) -> Answer:
        fields = {**form.fields, code_field: totp(secret)}
        action = self.path_of(form.action) if form.action else "/login"
        answer = self.visitor.client._open(  # the drill's client, posting the page's form
            self.visitor.opener, "POST", action, body=urllib.parse.urlencode(fields).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded",
                     "X-Forwarded-For": self.visitor.client_ip})
        return self.follow(answer)

    def submit(self, path: str, fields: dict[str, str], *, timeout: float | None = None
               ) -> tuple[Answer, float]:
        """GET the page, POST its form; the answer and the seconds both took."""
        self.client.timeout = timeout or 30
        started = time.monotonic()
        try:
            answer = self.visitor.submit(path, fields)
        except (TimeoutError, OSError) as exc:
            answer = Answer(0, f"no answer: {type(exc).__name__}".encode())
        finally:
            self.client.timeout = 30
        return answer, time.monotonic() - started

    def upload(self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
               ) -> Answer:
        page = self.visitor.get(path)
        token = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', page.body)
        body, content_type = multipart({**fields, "csrf_token": token.group(1).decode()
                                        if token else ""}, files)
        return self.visitor.client._open(self.visitor.opener, "POST", path, body=body, headers={
            "Content-Type": content_type, "X-Forwarded-For": self.visitor.client_ip})


# -- a local Lifeline ---------------------------------------------------------------------


class ProbeLifeline(LocalLifeline):
    """The drill's local Lifeline, with the probe's own settings and a staff account."""

    def __init__(self, *, workdir: Path, smtp_port: int, database_url: str | None,
                 extra: dict[str, str]):
        super().__init__(workdir=workdir, smtp_port=smtp_port, database_url=database_url)
        self.extra = extra

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **self.extra}

    def create_staff(self, email: str, role: str) -> str:
        """A staff account made with the CLI; its password."""
        password = secrets.token_urlsafe(18)
        done = subprocess.run([*FLASK, "staff", "create", email, "--role", role],
                              cwd=PROJECT_ROOT, env=self.environment(), input=password + "\n",
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"staff create failed: {done.stderr.strip()[-300:]}")
        return password
