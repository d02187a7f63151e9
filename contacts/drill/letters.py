"""What other people's mail software sends back to Lifeline during the drill, as bytes: an
admin's answer to an update as Thunderbird writes it (its header order, flowed text, the
attribution line and `>` quotes), and the bounce Postfix at a customer's relay sends later
to the envelope sender (RFC 3464, returning the whole message). Each arrives as the drill's
receiving server (MX) stores it: its Authentication-Results verdict above its Received:.
The inbound tests write their mail with these too (tests/inbound/letters.py), as a server
of their own (`mx`) and with the variants they need (no verdict, another authserv-id, a
delay notice)."""

from __future__ import annotations

import email
import email.policy
import itertools
import textwrap
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr

MX = "mx.lifeline.drill.example"  # the authserv-id the local Lifeline is told to trust
_counter = itertools.count(1)


def _now() -> str:
    return format_datetime(datetime.now(UTC))


def stamp(sender_domain: str, recipient: str, *, verdict: str | None, mx: str = MX,
          authserv_id: str | None = None) -> str:
    """What the receiving server `mx` puts on top: its verdict (as `authserv_id`, itself by
    default; none when `verdict` is None), then its Received: line."""
    received = (f"Received: from mail.{sender_domain} (mail.{sender_domain} [203.0.113.25])\n"
                f"\tby {mx} (Postfix) with ESMTPS id 4Q{next(_counter):08X}\n"
                f"\tfor <{recipient}>; {_now()}\n")
    if verdict is None:
        return received
    return f"Authentication-Results: {authserv_id or mx};\n\t{verdict}\n" + received


def passed(domain: str) -> str:
    return (f"dkim=pass header.d={domain} header.s=mail;\n"
            f"\tspf=pass smtp.mailfrom={domain};\n"
            f"\tdmarc=pass (p=reject dis=none) header.from={domain}")


def flowed(text: str) -> str:
    """format=flowed as Thunderbird writes it: long lines broken with a trailing space."""
    lines = []
    for paragraph in text.split("\n"):
        wrapped = textwrap.wrap(paragraph, 72, break_long_words=False) or [""]
        lines += [line + " " for line in wrapped[:-1]] + [wrapped[-1]]
    return "\n".join(lines)


def thunderbird_reply(original: bytes, *, sender: str, body: str, verdict: str | None = "",
                      mx: str = MX, authserv_id: str | None = None) -> bytes:
    """A reply to `original` (the bytes Lifeline sent) from `sender`, to its Reply-To,
    quoting its text under "On <date>, <name> wrote:". `verdict`: the receiving server's
    Authentication-Results ("": a DMARC pass for the sender's domain; None: no header)."""
    message = email.message_from_bytes(original, policy=email.policy.default)
    name, address = parseaddr(sender)
    domain = address.rpartition("@")[2]
    reply_to = str(message["Reply-To"] or message["From"])
    references = " ".join(filter(None, [str(message["References"] or "").strip(),
                                        str(message["Message-ID"])]))
    text_part = message.get_body(("plain",))
    quoted = "\n".join(f"> {line}".rstrip() for line in text_part.get_content().splitlines())
    author = parseaddr(str(message["From"]))[0] or "Lifeline"
    head = (stamp(domain, parseaddr(reply_to)[1], mx=mx, authserv_id=authserv_id,
                  verdict=passed(domain) if verdict == "" else verdict)
            + f"Message-ID: <{uuid.uuid4()}@{domain}>\n"
            f"Date: {format_datetime(datetime.now(UTC).astimezone())}\n"
            "MIME-Version: 1.0\n"
            "User-Agent: Mozilla Thunderbird\n"
            f"Subject: Re: {message['Subject']}\n"
            "Content-Language: en-US\n"
            f"To: {reply_to}\n"
            f"References: {references}\n"
            + (f"From: {name} <{address}>\n" if name else f"From: {address}\n")
            + f"In-Reply-To: {message['Message-ID']}\n"
            "Content-Type: text/plain; charset=UTF-8; format=flowed\n"
            "Content-Transfer-Encoding: 8bit\n")
    when = _now().rsplit(" ", 1)[0]
    text = f"{flowed(body)}\n\nOn {when}, {author} wrote:\n{quoted}\n"
    return (head + "\n" + text).replace("\n", "\r\n").encode("utf-8")


def postfix_bounce(original: bytes, *, return_path: str, recipient: str,
                   delayed: bool = False, mx: str = MX) -> bytes:
    """Postfix's notice to `return_path` (the envelope sender Lifeline used) that the
    customer's mailbox server refused `original` for `recipient` after its relay took it
    (550 5.1.1): Postfix's own layout, the whole message returned; or, `delayed`, that
    delivery is still being retried (4.4.1, with only the original's headers)."""
    host = "relay.customer.example"
    queue_id = f"{next(_counter):010X}"
    boundary = f"{queue_id}.1733330000/{host}"
    now = _now()
    if delayed:
        subject = "Delayed Mail (still being retried)"
        notice = ("####################################################################\n"
                  "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
                  "####################################################################\n\n"
                  "Your message could not be delivered for 0.5 hours.\n"
                  "It will be retried until it is 5.0 days old.\n")
        status = (f"Final-Recipient: rfc822; {recipient}\nAction: delayed\nStatus: 4.4.1\n"
                  "Diagnostic-Code: X-Postfix; connect to mx.customer.example[198.51.100.7]:"
                  "25:\n    Connection timed out\nWill-Retry-Until: " + now + "\n")
        returned = ("Content-Description: Undelivered Message Headers\n"
                    "Content-Type: text/rfc822-headers\n\n"
                    + original.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
                    .replace("\r\n", "\n") + "\n")
    else:
        subject = "Undelivered Mail Returned to Sender"
        notice = ("I'm sorry to have to inform you that the message returned\n"
                  "below could not be delivered to one or more destinations.\n\n"
                  "For further assistance, please send mail to <postmaster>\n\n"
                  "If you do so, please include this problem report. You can\n"
                  "delete your own text from the message returned below.\n\n"
                  "\t\t\tThe Postfix program\n\n"
                  f"<{recipient}>: host mx.customer.example[198.51.100.7] said: 550 5.1.1\n"
                  f"    <{recipient}>: Recipient address rejected: User unknown in virtual\n"
                  "    mailbox table (in reply to RCPT TO command)\n")
        status = (f"Final-Recipient: rfc822; {recipient}\nOriginal-Recipient: rfc822;"
                  f"{recipient}\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; "
                  "mx.customer.example\nDiagnostic-Code: smtp; 550 5.1.1 <" + recipient
                  + ">:\n    Recipient address rejected: User unknown in virtual mailbox table\n")
        returned = ("Content-Description: Undelivered Message\nContent-Type: message/rfc822\n"
                    "Content-Transfer-Encoding: 8bit\n\n"
                    + original.decode("utf-8", errors="replace").replace("\r\n", "\n") + "\n")
    text = (f"Return-Path: <>\nDelivered-To: {return_path}\n"
            + stamp("customer.example", return_path, verdict=None, mx=mx).replace(
                "mail.customer.example", host)
            + f"Received: by {host} (Postfix)\n\tid {queue_id}; {now}\n"
            f"Date: {now}\nFrom: MAILER-DAEMON@{host} (Mail Delivery System)\n"
            f"Subject: {subject}\nTo: {return_path}\n"
            "Auto-Submitted: auto-replied\n"
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
