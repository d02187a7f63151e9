"""Sending email over SMTP. Callers pass what to send; nothing here logs an address."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from contacts.errors import LifelineError


class MailFailed(LifelineError):
    status = 502
    code = "mail_failed"

    def __init__(self, message: str, *, server_down: bool = False):
        super().__init__(message)
        # True when the server could not be reached or dropped us (every message would fail
        # now); False when it refused this one message.
        self.server_down = server_down


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    sender: str
    security: str = "none"  # none, starttls or tls
    username: str = ""
    password: str | None = None
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings) -> Mailer:
        return cls(host=settings.mail_host, port=settings.mail_port, sender=settings.mail_sender,
                   security=settings.mail_security, username=settings.mail_username,
                   password=settings.secrets.mail_password,
                   timeout=settings.mail_timeout_seconds)

    def send(self, *, to: str, subject: str, text: str, html: str | None = None,
             message_id: str | None = None, headers: dict[str, str] | None = None) -> str:
        with self.connection() as connection:
            return connection.send(to=to, subject=subject, text=text, html=html,
                                   message_id=message_id, headers=headers)

    def connection(self) -> MailConnection:
        """One SMTP connection for many messages (opened on the first, reopened after a
        failure); use it as a context manager."""
        return MailConnection(self)

    def _message(self, *, to: str, subject: str, text: str, html: str | None,
                 message_id: str | None, headers: dict[str, str] | None) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = message_id or make_msgid(domain="lifeline")
        for name, value in (headers or {}).items():
            message[name] = value
        message.set_content(text)
        if html:
            message.add_alternative(html, subtype="html")
        return message

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
             message_id: str | None = None, headers: dict[str, str] | None = None) -> str:
        message = self.mailer._message(to=to, subject=subject, text=text, html=html,
                                       message_id=message_id, headers=headers)
        try:
            if self._smtp is None:
                self._smtp = self.mailer._connect()
                if self.mailer.username:
                    self._smtp.login(self.mailer.username, self.mailer.password or "")
            self._smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            self.close()  # the next message opens a new connection
            refused = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused,
                       smtplib.SMTPDataError)
            raise MailFailed(f"sending through {self.mailer.host}:{self.mailer.port} failed: "
                             f"{type(exc).__name__}",
                             server_down=not isinstance(exc, refused)) from None
        return message["Message-ID"]

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None


LANGUAGES = ("en", "fr")


def language_of(locale: str | None) -> str:
    """The language a message is written in for a locale: French or English."""
    return "fr" if (locale or "").lower().startswith("fr") else "en"


def render_message(environment, kind: str, locale: str | None,
                   values: dict) -> tuple[str, str, str]:
    """(subject, text, html) of templates/messages/<kind>/<language>/, for a locale."""
    folder = f"messages/{kind}/{language_of(locale)}"
    subject, text, html = (environment.get_template(f"{folder}/{part}").render(**values)
                           for part in ("subject.txt", "body.txt", "body.html"))
    return " ".join(subject.split()), text, html
