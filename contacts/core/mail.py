"""Sending email over SMTP. Callers pass what to send; nothing here logs an address."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid, parseaddr

from contacts.core import mailtokens
from contacts.core.errors import LifelineError


class MailFailed(LifelineError):
    status = 502
    code = "mail_failed"

    def __init__(self, message: str, *, server_down: bool = False, permanent: bool = False,
                 bounced: bool = False):
        super().__init__(message)
        # True when the server could not be reached, dropped us or refused our sender (every
        # message would fail now); False when it refused this one message.
        self.server_down = server_down
        # True when it refused this message for good (a 5xx reply): trying again will not
        # help.
        self.permanent = permanent
        # True when that refusal was of the recipient's address (no such mailbox...): the
        # contact needs checking, not the message.
        self.bounced = bounced


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    sender: str
    security: str = "none"  # none, starttls or tls
    username: str = ""
    password: str | None = None
    timeout: float = 10.0
    # The right-hand side of every Message-ID (`[mail] domain`, checked by the settings).
    domain: str = "lifeline"
    # The bounce mailbox (`[mail] return_path`) and the key its VERP tokens are signed
    # with; no key: every envelope sender is the sender's address.
    return_path: str = ""
    secret: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings) -> Mailer:
        return cls(host=settings.mail_host, port=settings.mail_port, sender=settings.mail_sender,
                   security=settings.mail_security, username=settings.mail_username,
                   password=settings.secrets.mail_password,
                   timeout=settings.mail_timeout_seconds, domain=settings.mail_domain,
                   return_path=settings.mail_return_path,
                   secret=settings.secrets.secret_key)

    def envelope_sender(self, outbox_id: int | None = None) -> str:
        """MAIL FROM of a message: the return path naming its outbox row (VERP), so a late
        bounce says which message it reports; the sender's address when there is no row
        or no key."""
        if outbox_id and self.secret:
            return mailtokens.return_path(self.return_path or parseaddr(self.sender)[1],
                                          self.secret, outbox_id)
        return self.sender

    def send(self, *, to: str, subject: str, text: str, html: str | None = None,
             message_id: str | None = None, headers: dict[str, str] | None = None,
             envelope_sender: str | None = None) -> str:
        with self.connection() as connection:
            return connection.send(to=to, subject=subject, text=text, html=html,
                                   message_id=message_id, headers=headers,
                                   envelope_sender=envelope_sender)

    def connection(self) -> MailConnection:
        """One SMTP connection for many messages (opened on the first, reopened after a
        failure); use it as a context manager."""
        return MailConnection(self)

    def message_bytes(self, *, to: str, subject: str, text: str, html: str | None,
                      message_id: str | None, headers: dict[str, str] | None) -> bytes:
        return build_message(sender=self.sender, to=to, subject=subject, text=text, html=html,
                             message_id=message_id or make_msgid(domain=self.domain),
                             headers=headers)

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=ssl.create_default_context())
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        return smtp


class MailConnection:
    def __init__(self, mailer: Mailer):
        self.mailer = mailer
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> MailConnection:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def send(self, *, to: str, subject: str, text: str, html: str | None = None,
             message_id: str | None = None, headers: dict[str, str] | None = None,
             envelope_sender: str | None = None) -> str:
        message_id = message_id or make_msgid(domain=self.mailer.domain)
        self.send_bytes(to=to, data=self.mailer.message_bytes(
            to=to, subject=subject, text=text, html=html, message_id=message_id,
            headers=headers), envelope_sender=envelope_sender)
        return message_id

    def send_bytes(self, *, to: str, data: bytes, envelope_sender: str | None = None) -> None:
        """Send a built message, from `envelope_sender` (MAIL FROM: a return path,
        `Mailer.envelope_sender`; else the sender). Where the server offers PIPELINING
        (RFC 2920) the envelope and DATA go in one write: two round trips per message
        instead of four."""
        where = f"{self.mailer.host}:{self.mailer.port}"
        sender = envelope_sender or self.mailer.sender
        try:
            smtp = self._open()
            utf8 = not (to.isascii() and sender.isascii())
            if utf8 and not (smtp.does_esmtp and smtp.has_extn("smtputf8")):
                raise MailFailed(f"{where} does not offer SMTPUTF8, which this address needs",
                                 permanent=True, bounced=True)
            if smtp.does_esmtp and smtp.has_extn("pipelining"):
                _pipelined(smtp, sender, to, data, utf8)
            else:
                smtp.sendmail(sender, [to], data, mail_options=["SMTPUTF8"] if utf8 else [])
        except smtplib.SMTPRecipientsRefused as exc:  # the connection is still good (RSET)
            code = _reply_code(exc)
            raise MailFailed(f"{where} refused the recipient: {code}", permanent=code >= 500,
                             bounced=code >= 500) from None
        except smtplib.SMTPDataError as exc:
            self.close()
            raise MailFailed(f"{where} refused the message: {exc.smtp_code}",
                             permanent=exc.smtp_code >= 500) from None
        except (OSError, smtplib.SMTPException) as exc:  # down, or our sender refused
            self.close()  # the next message opens a new connection
            code = _reply_code(exc)
            raise MailFailed(f"sending through {where} failed: {type(exc).__name__}"
                             + (f" {code}" if code else ""), server_down=True) from None

    def _open(self) -> smtplib.SMTP:
        if self._smtp is None:
            self._smtp = self.mailer._connect()
            if self.mailer.username:
                self._smtp.login(self.mailer.username, self.mailer.password or "")
            self._smtp.ehlo_or_helo_if_needed()
        return self._smtp

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None


def _pipelined(smtp: smtplib.SMTP, sender: str, to: str, data: bytes, utf8: bool) -> None:
    if any(mark in address for address in (sender, to) for mark in "\r\n"):
        raise smtplib.SMTPRecipientsRefused({to: (501, b"a line break in an address")})
    option = " SMTPUTF8" if utf8 else ""
    smtp.send(f"MAIL FROM:{_envelope(sender)}{option}\r\nRCPT TO:{_envelope(to)}\r\n"
              "DATA\r\n".encode())
    (mail_code, mail_reply), (rcpt_code, rcpt_reply), (data_code, data_reply) = (
        smtp.getreply(), smtp.getreply(), smtp.getreply())
    if data_code == 354:
        if mail_code != 250 or rcpt_code not in (250, 251):
            smtp.send(b".\r\n")  # a server that said 354 anyway: end the empty message
            smtp.getreply()
        else:
            smtp.send(_dot_stuffed(data))
            code, reply = smtp.getreply()
            if code != 250:
                smtp.rset()
                raise smtplib.SMTPDataError(code, reply)
            return
    smtp.rset()
    if mail_code != 250:
        raise smtplib.SMTPSenderRefused(mail_code, mail_reply, sender)
    if rcpt_code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({to: (rcpt_code, rcpt_reply)})
    raise smtplib.SMTPDataError(data_code, data_reply)


def _reply_code(exc: Exception) -> int:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return min((code for code, _ in exc.recipients.values()), default=0)
    return getattr(exc, "smtp_code", 0) or 0


@functools.lru_cache(maxsize=64)
def _sender_envelope(address: str) -> str:
    return smtplib.quoteaddr(address)


def _envelope(address: str) -> str:
    """`<user@host>` for the envelope; a bare address (what the vault stores) is taken as
    is, a "Name <user@host>" one is parsed."""
    if "<" in address or " " in address or '"' in address:
        return _sender_envelope(address)
    return f"<{address}>"


def _dot_stuffed(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


ADDRESS_HEADERS = ("From", "To")
SUPPORT_LIST_ID = "Lifeline support <support.lifeline>"  # intake's and escalations' mail
# Every message Lifeline sends is written by a program, not typed by a person for this
# recipient (RFC 3834): vacation responders and other robots must not answer it.
AUTO_SUBMITTED = ("Auto-Submitted", "auto-generated")
# A host name as a Message-ID's right-hand side: dot-separated labels of letters, digits and
# inner hyphens (ASCII; an international name goes in its IDNA form).
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def message_domain(value: str) -> str:
    """`value` as the domain of Message-IDs, lower-cased and IDNA-encoded; ValueError when it
    is no host name."""
    try:
        domain = value.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"{value!r} is not a host name") from None
    if not domain or len(domain) > 253 or not all(map(_LABEL.match, domain.split("."))):
        raise ValueError(f"{value!r} is not a host name")
    return domain


def rfc5322_date(moment: datetime | None = None) -> str:
    """`Thu, 03 Dec 2026 16:37:25 +0000`: UTC as a numeric zone (RFC 5322 3.3; `GMT` is the
    obsolete form and `-0000` says the zone is unknown)."""
    return format_datetime((moment or datetime.now(UTC)).astimezone(UTC))


def _header(name: str, value: str) -> bytes:
    value = " ".join(value.split())  # no line breaks from a value into the header block
    if value.isascii() and len(name) + len(value) < 77:
        return f"{name}: {value}\r\n".encode()
    if name in ADDRESS_HEADERS:
        # Only a display name is encoded; a non-ASCII address itself goes as UTF-8 (sent
        # only to servers that offer SMTPUTF8).
        display, bracket, address = value.rpartition("<")
        if bracket and display.strip() and not display.isascii():
            return f"{name}: {_encoded_words(display.strip())} <{address}\r\n".encode()
        return f"{name}: {value}\r\n".encode()
    if value.isascii() and len(name) + len(value) < 997:
        return f"{name}: {_folded(value, first=len(name) + 2)}\r\n".encode()
    return f"{name}: {_encoded_words(value, first=len(name) + 2)}\r\n".encode()


def _folded(value: str, first: int = 0, width: int = 76) -> str:
    """A long ASCII value folded at spaces (the first line shorter by the header's name)."""
    lines, line = [], ""
    for word in value.split(" "):
        if line and len(line) + 1 + len(word) > width - (1 if lines else first):
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\r\n ".join([*lines, line])


def _encoded_words(value: str, chunk: int = 45, first: int = 0) -> str:
    """RFC 2047 base64 words of at most `chunk` UTF-8 bytes each (never splitting a
    character), one per folded line; the first is shorter by the `first` characters of the
    header's name, so no line passes 76."""
    words, current, size = [], [], 0
    limit = chunk - (first * 3 + 3) // 4
    for character in value:
        width = len(character.encode("utf-8"))
        if size + width > limit:
            limit = chunk
            words.append("".join(current))
            current, size = [], 0
        current.append(character)
        size += width
    words.append("".join(current))
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(word.encode()).decode()}?="
                         for word in words if word)


@functools.lru_cache(maxsize=16)
def _base64_part(content_type: str, body: str) -> bytes:
    """A body part; cached, as a fan-out sends the same body to an account's contacts."""
    encoded = base64.encodebytes(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return (f"Content-Type: {content_type}; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + encoded


def build_message(*, sender: str, to: str, subject: str, text: str, html: str | None,
                  message_id: str, headers: dict[str, str] | None = None,
                  date: str | None = None) -> bytes:
    """The message as bytes: headers, then the text (and HTML, as multipart/alternative) in
    UTF-8 and base64. Built directly: the email package's header folding took a fifth of
    a fan-out's sending time. `Auto-Submitted: auto-generated` unless `headers` say
    otherwise."""
    extra = dict(headers or {})
    if not any(name.lower() == "auto-submitted" for name in extra):
        extra[AUTO_SUBMITTED[0]] = AUTO_SUBMITTED[1]
    head = b"".join(_header(name, value) for name, value in (
        ("From", sender), ("To", to), ("Subject", subject),
        ("Date", date or rfc5322_date()), ("Message-ID", message_id),
        *extra.items())) + b"MIME-Version: 1.0\r\n"
    if not html:
        return head + _base64_part("text/plain", text)
    boundary = f"=={hashlib.sha256(message_id.encode()).hexdigest()[:24]}=="
    return (head + f"Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
            f"--{boundary}\r\n".encode() + _base64_part("text/plain", text)
            + f"--{boundary}\r\n".encode() + _base64_part("text/html", html)
            + f"--{boundary}--\r\n".encode())


LANGUAGES = ("en", "fr")


def language_of(locale: str | None) -> str:
    """The language a message is written in for a locale: French or English."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


# render(kind, locale, values) -> (subject, text body, html body): how every area is handed
# its emails' templates (the app passes render_message over its Jinja environment).
Renderer = Callable[[str, str | None, dict], tuple[str, str, str]]


def render_message(environment, kind: str, locale: str | None,
                   values: dict) -> tuple[str, str, str]:
    """(subject, text, html) of templates/messages/<kind>/<language>/, for a locale."""
    folder = f"messages/{kind}/{language_of(locale)}"
    subject, text, html = (environment.get_template(f"{folder}/{part}").render(**values)
                           for part in ("subject.txt", "body.txt", "body.html"))
    return " ".join(subject.split()), text, html
