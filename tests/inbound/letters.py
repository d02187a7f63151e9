"""Mail that other people's software writes to Lifeline, as bytes: a reply as Thunderbird
writes one (the layout of fixtures/reply_thunderbird_en.eml: its header order, flowed
text, the attribution line and `>` quotes) and Postfix's own bounce and delay notice (the
layout of fixtures/dsn_postfix_failed.eml and dsn_postfix_delayed.eml, returning the real
bytes Lifeline sent), both written by the drill's contacts/drill/letters.py; a new message,
an attachment, a feedback-loop report, and Exchange's out-of-office reply (the layout of
fixtures/autoreply_exchange_oof.eml). Each arrives as the receiving server stores it: its
`Received:` stamp and, when asked, its Authentication-Results verdict above it."""

from __future__ import annotations

import base64
import email
import email.policy
import uuid
from email.header import Header
from email.utils import format_datetime, parseaddr

from contacts.core.db import utcnow
from contacts.drill import letters as drill_letters

MX = "mx.lifeline.test"  # the receiving server, the one authserv-id the tests trust
_counter = iter(range(1, 10**9))
passed, flowed = drill_letters.passed, drill_letters.flowed


def _stamp(sender_domain: str, *, verdict: str | None, authserv_id: str = MX) -> str:
    return drill_letters.stamp(sender_domain, "support@lifeline.example", verdict=verdict,
                               mx=MX, authserv_id=authserv_id)


def thunderbird_reply(original: bytes, *, sender: str, body: str, verdict: str | None = "",
                      authserv_id: str = MX) -> bytes:
    """A reply to `original` as Thunderbird sends it (contacts/drill/letters.py), received
    by the tests' server."""
    return drill_letters.thunderbird_reply(original, sender=sender, body=body, verdict=verdict,
                                           mx=MX, authserv_id=authserv_id)


def postfix_bounce(original: bytes, *, return_path: str, recipient: str,
                   delayed: bool = False) -> bytes:
    """Postfix's bounce or delay notice (contacts/drill/letters.py), received by the tests'
    server."""
    return drill_letters.postfix_bounce(original, return_path=return_path, recipient=recipient,
                                        delayed=delayed, mx=MX)


def _id(domain: str) -> str:
    return f"<{uuid.uuid4().hex[:8].upper()}.{next(_counter)}@{domain}>"


def new_message(*, sender: str, to: str, subject: str, body: str, verdict: str | None = "",
                authserv_id: str = MX) -> bytes:
    """A new message from a mail client to a support address."""
    name, address = parseaddr(sender)
    domain = address.rpartition("@")[2]
    head = (_stamp(domain, verdict=passed(domain) if verdict == "" else verdict,
                   authserv_id=authserv_id)
            + f"Message-ID: {_id(domain)}\n"
            f"Date: {format_datetime(utcnow().astimezone())}\n"
            "MIME-Version: 1.0\nUser-Agent: Mozilla Thunderbird\n"
            f"Content-Language: en-US\nTo: {to}\n"
            f"From: {name} <{address}>\n" f"Subject: {subject}\n"
            "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
            "Content-Transfer-Encoding: 8bit\n")
    return (head + "\n" + flowed(body) + "\n").replace("\n", "\r\n").encode("utf-8")


def with_attachment(raw: bytes, *, filename: str, data: bytes,
                    content_type: str = "application/pdf") -> bytes:
    """`raw` (a single text part) as multipart/mixed with an attachment, base64 in lines of
    76 as mail clients write it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n")
             if not line.lower().startswith((b"content-type:", b"content-transfer-encoding:"))]
    boundary = f"------------{uuid.uuid4().hex[:24]}"
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (b"\r\n".join(lines) + f"\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\""
            "\r\n\r\nThis is a multi-part message in MIME format.\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n".encode() + body
            + f"\r\n--{boundary}\r\nContent-Type: {content_type}; name=\"{filename}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode() + encoded
            + f"\r\n--{boundary}--\r\n".encode())


def exchange_out_of_office(original: bytes, *, sender: str) -> bytes:
    """Exchange's automatic reply to `original`, sent to its Reply-To."""
    message = email.message_from_bytes(original, policy=email.policy.default)
    name, address = parseaddr(sender)
    domain = address.rpartition("@")[2]
    head = (_stamp(domain, verdict=passed(domain))
            + f"From: \"{name}\" <{address}>\n"
            f"To: {message['Reply-To'] or message['From']}\n"
            f"Subject: {Header('Automatic reply: ' + str(message['Subject']), 'utf-8').encode()}\n"
            f"Date: {format_datetime(utcnow())}\n"
            f"Message-ID: {_id(domain)}\n"
            f"In-Reply-To: {message['Message-ID']}\n"
            "X-Auto-Response-Suppress: All\n"
            f"X-MS-Exchange-Inbox-Rules-Loop: {address}\n"
            "X-MS-TNEF-Correlator:\n"
            "Content-Type: text/plain; charset=\"us-ascii\"\n"
            "Content-Transfer-Encoding: quoted-printable\nMIME-Version: 1.0\n")
    body = "I'm out of the office until Monday and will answer when I am back.\n"
    return (head + "\n" + body).replace("\n", "\r\n").encode("ascii")


def abuse_report(original: bytes, *, recipient: str, mail_from: str | None,
                 signed: bool = True) -> bytes:
    """A feedback-loop report (ARF, RFC 5965) as Yahoo! Mail's (the layout of
    fixtures/arf_yahoo_abuse.eml): `recipient` marked `original` as spam; `mail_from` is the
    envelope sender it was sent with (None: the provider leaves it out). `signed`: the
    provider's DKIM signature verified by the receiving server (else no verdict at all)."""
    boundary = f"_----------={next(_counter):023d}"
    now = format_datetime(utcnow())
    original_from = f"Original-Mail-From: <{mail_from}>\n" if mail_from else ""
    stamp = _stamp("arf.mail.yahoo.test",
                   verdict=passed("arf.mail.yahoo.test") if signed else None)
    text = (stamp + "Mime-Version: 1.0\nContent-Transfer-Encoding: 7bit\n"
            f"Content-Type: multipart/report; boundary=\"{boundary}\";\n"
            " report-type=\"feedback-report\"\n"
            "X-Mailer: MIME::Lite 3.021 (F2.6; T1.27; A2.04; B3.05; Q3.03)\n"
            f"Date: {now}\nFrom: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.test>\n"
            f"To: {SUPPORT_FEEDBACK}\nSubject: FW:Incident update\n"
            f"Message-Id: <{next(_counter)}@returns.bulk.yahoo.test>\n\n"
            "This is a multi-part message in MIME format.\n\n"
            f"--{boundary}\nMIME-Version: 1.0\nContent-Disposition: inline\n"
            "Content-Transfer-Encoding: 7bit\nContent-Type: text/plain; charset=\"US-ASCII\"\n\n"
            "This is an email abuse report for an email message received from lifeline.test\n\n"
            f"--{boundary}\nContent-Disposition: inline\nContent-Transfer-Encoding: 7bit\n"
            "Content-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
            "User-Agent: Yahoo!-Mail-Feedback/1.0\nVersion: 0.1\n" + original_from
            + f"Original-Rcpt-To: {recipient}\nReceived-Date: {now}\n"
            "Reported-Domain: lifeline.test\n\n"
            f"--{boundary}\nContent-Disposition: inline\nContent-Transfer-Encoding: 7bit\n"
            "Content-Type: message/rfc822\n\n"
            + original.decode("utf-8").replace("\r\n", "\n") + f"\n--{boundary}--\n")
    return text.replace("\n", "\r\n").encode("utf-8")


SUPPORT_FEEDBACK = "support@lifeline.test"  # where the provider's feedback loop reports
