"""Real RFC 5322 messages as customers' mail clients send them, for the inbound tests and
the benchmark: each with its own Message-ID, sender, subject and body phrase (so a scan can
look for them), multipart text and HTML, some with an attachment."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def phrase(number: int) -> str:
    """The sentence only message `number` holds (and no other message's contains)."""
    return f"our backup job {number:05d} stopped at the fjord-walrus checkpoint"


def sender(number: int) -> str:
    return f"customer{number:05d}@client{number % 97:02d}.example.org"


def message_id(number: int) -> str:
    return f"<{hashlib.sha256(str(number).encode()).hexdigest()[:24]}@client.example.org>"


def customer_message(number: int, *, attachment_bytes: int = 0, padding: int = 2000) -> bytes:
    """A customer's message as Thunderbird would send it (quoted text and signature
    included), about `padding` bytes of text; with an attachment of `attachment_bytes`."""
    message = EmailMessage()
    message["From"] = f"Customer {number} <{sender(number)}>"
    message["To"] = "Lifeline Support <support@lifeline.example.com>"
    message["Subject"] = f"Re: restore of site {number:05d} (ticket walrus-{number})"
    message["Date"] = format_datetime(START + timedelta(minutes=number))
    message["Message-ID"] = message_id(number)
    message["User-Agent"] = "Mozilla Thunderbird"
    filler = ("The nightly export finished later than usual and the dashboard still shows "
              "yesterday's figures. ")
    body = (f"Hello,\n\n{phrase(number)}.\n\n" + filler * max(1, padding // len(filler))
            + "\n\nBest regards,\nCustomer\n\n-- \nCustomer, Operations\n\n"
            "On 01/12/2026 09:00, Lifeline Support wrote:\n> Your site is being restored.\n")
    message.set_content(body)
    message.add_alternative(f"<html><body><p>Hello,</p><p>{phrase(number)}.</p>"
                            f"<p>{filler * 3}</p></body></html>", subtype="html")
    if attachment_bytes:
        data = (hashlib.sha256(str(number).encode()).digest() * (attachment_bytes // 32 + 1)
                )[:attachment_bytes]
        message.add_attachment(data, maintype="application", subtype="pdf",
                               filename=f"export-{number:05d}.pdf")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
