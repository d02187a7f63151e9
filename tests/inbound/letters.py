"""Mail that other people's software writes to Lifeline, as bytes: a reply as Thunderbird
writes one (the layout of fixtures/reply_thunderbird_en.eml: its header order, flowed
text, the attribution line and `>` quotes), a new message, Postfix's own bounce and
delay notice (the layout of fixtures/dsn_postfix_failed.eml and dsn_postfix_delayed.eml,
returning the real bytes Lifeline sent), and Exchange's out-of-office reply (the layout of
fixtures/autoreply_exchange_oof.eml). Each arrives as the receiving server stores it: its
`Received:` stamp and, when asked, its Authentication-Results verdict above it."""

from __future__ import annotations

import base64
import email
import email.policy
import textwrap
import uuid
from email.header import Header
from email.utils import format_datetime, parseaddr

from contacts.core.db import utcnow

MX = "mx.lifeline.test"  # the receiving server, the one authserv-id the tests trust
_counter = iter(range(1, 10**9))


def _stamp(sender_domain: str, *, verdict: str | None, authserv_id: str = MX) -> str:
    """What the receiving server puts on top: its verdict, then its Received: line."""
    received = (f"Received: from mail.{sender_domain} (mail.{sender_domain} [203.0.113.25])\n"
                f"\tby {MX} (Postfix) with ESMTPS id 4Q{next(_counter):08X}\n"
                f"\tfor <support@lifeline.example>; {format_datetime(utcnow())}\n")
    if verdict is None:
        return received
    return f"Authentication-Results: {authserv_id};\n\t{verdict}\n" + received


def passed(domain: str) -> str:
    return (f"dkim=pass header.d={domain} header.s=mail;\n"
            f"\tspf=pass smtp.mailfrom={domain};\n"
            f"\tdmarc=pass (p=reject dis=none) header.from={domain}")


def _id(domain: str) -> str:
    return f"<{uuid.uuid4().hex[:8].upper()}.{next(_counter)}@{domain}>"


def _flowed(text: str) -> str:
    """format=flowed as Thunderbird writes it: long lines broken with a trailing space."""
    lines = []
    for paragraph in text.split("\n"):
        wrapped = textwrap.wrap(paragraph, 72, break_long_words=False) or [""]
        lines += [line + " " for line in wrapped[:-1]] + [wrapped[-1]]
    return "\n".join(lines)


def thunderbird_reply(original: bytes, *, sender: str, body: str, verdict: str | None = "",
                      authserv_id: str = MX) -> bytes:
    """A reply to `original` (bytes Lifeline sent) as Thunderbird sends it: to its Reply-To,
    quoting its text under "On <date>, <name> wrote:". `verdict`: the receiving server's
    Authentication-Results ("" = a pass for the sender's domain, None = no header)."""
    message = email.message_from_bytes(original, policy=email.policy.default)
    name, address = parseaddr(sender)
    domain = address.rpartition("@")[2]
    reply_to = message["Reply-To"] or message["From"]
    references = " ".join(filter(None, [str(message["References"] or "").strip(),
                                        str(message["Message-ID"])]))
    text_part = message.get_body(("plain",))
    quoted = "\n".join(f"> {line}".rstrip() for line in text_part.get_content().splitlines())
    author = parseaddr(str(message["From"]))[0] or "Lifeline"
    head = (_stamp(domain, verdict=passed(domain) if verdict == "" else verdict,
                   authserv_id=authserv_id)
            + f"Message-ID: {_id(domain)}\n"
            f"Date: {format_datetime(utcnow().astimezone())}\n"
            "MIME-Version: 1.0\n"
            "User-Agent: Mozilla Thunderbird\n"
            f"Subject: Re: {message['Subject']}\n"
            "Content-Language: en-US\n"
            f"To: {reply_to}\n"
            f"References: {references}\n"
            + (f"From: {name} <{address}>\n" if name else f"From: {address}\n"))
    head += (f"In-Reply-To: {message['Message-ID']}\n"
             "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
             "Content-Transfer-Encoding: 8bit\n")
    when = format_datetime(utcnow()).rsplit(" ", 1)[0]
    text = f"{_flowed(body)}\n\nOn {when}, {author} wrote:\n{quoted}\n"
    return (head + "\n" + text).replace("\n", "\r\n").encode("utf-8")


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
    return (head + "\n" + _flowed(body) + "\n").replace("\n", "\r\n").encode("utf-8")


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


def postfix_bounce(original: bytes, *, return_path: str, recipient: str,
                   delayed: bool = False) -> bytes:
    """Postfix's own notice to `return_path` (the envelope sender Lifeline used) that
    `recipient` refused `original` later (550 5.1.1), or that delivery is still being
    retried (`delayed`: 4.4.1, with only the original's headers)."""
    host = "relay.customer.test"
    queue_id = f"{next(_counter):010X}"
    boundary = f"{queue_id}.1733330000/{host}"
    now = format_datetime(utcnow())
    if delayed:
        subject = "Delayed Mail (still being retried)"
        notice = ("####################################################################\n"
                  "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
                  "####################################################################\n\n"
                  "Your message could not be delivered for 0.5 hours.\n"
                  "It will be retried until it is 5.0 days old.\n")
        status = (f"Final-Recipient: rfc822; {recipient}\nAction: delayed\nStatus: 4.4.1\n"
                  f"Diagnostic-Code: X-Postfix; connect to mx.customer.test[198.51.100.7]:25:\n"
                  "    Connection timed out\nWill-Retry-Until: " + now + "\n")
        returned = ("Content-Description: Undelivered Message Headers\n"
                    "Content-Type: text/rfc822-headers\n\n"
                    + original.split(b"\r\n\r\n", 1)[0].decode("utf-8").replace("\r\n", "\n")
                    + "\n")
    else:
        subject = "Undelivered Mail Returned to Sender"
        notice = ("I'm sorry to have to inform you that the message returned\n"
                  "below could not be delivered to one or more destinations.\n\n"
                  "For further assistance, please send mail to <postmaster>\n\n"
                  "If you do so, please include this problem report. You can\n"
                  "delete your own text from the message returned below.\n\n"
                  "\t\t\tThe Postfix program\n\n"
                  f"<{recipient}>: host mx.customer.test[198.51.100.7] said: 550 5.1.1\n"
                  f"    <{recipient}>: Recipient address rejected: User unknown in virtual\n"
                  "    mailbox table (in reply to RCPT TO command)\n")
        status = (f"Final-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822;"
                  f"{recipient}\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; "
                  "mx.customer.test\nDiagnostic-Code: smtp; 550 5.1.1 <" + recipient + ">:\n"
                  "    Recipient address rejected: User unknown in virtual mailbox table\n")
        returned = ("Content-Description: Undelivered Message\nContent-Type: message/rfc822\n"
                    "Content-Transfer-Encoding: 8bit\n\n"
                    + original.decode("utf-8").replace("\r\n", "\n") + "\n")
    text = (f"Return-Path: <>\nDelivered-To: {return_path}\n"
            + _stamp("customer.test", verdict=None).replace("mail.customer.test", host)
            + f"Received: by {host} (Postfix)\n\tid {queue_id}; {now}\n"
            f"Date: {now}\nFrom: MAILER-DAEMON@{host} (Mail Delivery System)\n"
            f"Subject: {subject}\nTo: {return_path}\nAuto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n"
            f"\tboundary=\"{boundary}\"\nContent-Transfer-Encoding: 8bit\n"
            f"Message-Id: <{queue_id}@{host}>\n\n"
            "This is a MIME-encapsulated message.\n\n"
            f"--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; "
            f"charset=us-ascii\n\nThis is the mail system at host {host}.\n\n{notice}\n"
            f"--{boundary}\nContent-Description: Delivery report\nContent-Type: "
            f"message/delivery-status\n\nReporting-MTA: dns; {host}\nX-Postfix-Queue-ID: "
            f"{queue_id}\nX-Postfix-Sender: rfc822; {return_path}\nArrival-Date: {now}\n\n"
            f"{status}\n--{boundary}\n{returned}\n--{boundary}--\n")
    return text.replace("\n", "\r\n").encode("utf-8")


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
