"""Messages are built as bytes and sent over one connection, pipelined where the server
offers it; a real SMTP server (aiosmtpd) receives them and they parse as they should."""

from __future__ import annotations

import email
import email.policy
import socket

import pytest

from contacts.core.mail import Mailer, MailFailed, build_message, message_domain
from tests.helpers import smtp_server_with

REFUSED = "nobody@refused.example"
REFUSED_SENDER = "blocked@sender.example"


class Recorder:
    """Keeps each message with its envelope; offers PIPELINING when asked to."""

    def __init__(self, pipelining: bool):
        self.pipelining = pipelining
        self.received: list[tuple[str, list[str], email.message.EmailMessage]] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        if address == REFUSED_SENDER:
            return "550 5.7.1 sender not allowed"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address == REFUSED:
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.received.append((envelope.mail_from, envelope.rcpt_tos,
                              email.message_from_bytes(envelope.content,
                                                       policy=email.policy.default)))
        return "250 OK"


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def server(request):
    recorder = Recorder(pipelining=request.param)
    with smtp_server_with(recorder) as port:
        yield Mailer(host="127.0.0.1", port=port,
                     sender="Lifeline <status@lifeline.example>"), recorder


def test_messages_over_one_connection_arrive_whole_and_a_refusal_spares_the_next(server):
    mailer, recorder = server
    text = "Line one\n.a line that starts with a dot\nÉté: données restaurées à 40 %\n"
    with mailer.connection() as connection:
        connection.send(to="ada@acme.example", subject="Mise à jour n°2 : 40 % restauré",
                        text=text, html="<p>40&nbsp;% <b>restauré</b></p>",
                        message_id="<one@lifeline>", headers={"List-Id": "Lifeline <x.y>"})
        with pytest.raises(MailFailed) as refused:
            connection.send(to=REFUSED, subject="x", text="y", message_id="<two@lifeline>")
        assert refused.value.server_down is False
        connection.send(to="bob@acme.example", subject="Plain " + "word " * 60, text="only text",
                        message_id="<three@lifeline>")
    assert [(sender, to) for sender, to, _ in recorder.received] == [
        ("status@lifeline.example", ["ada@acme.example"]),
        ("status@lifeline.example", ["bob@acme.example"])]
    first, second = recorder.received[0][2], recorder.received[1][2]
    assert first["Subject"] == "Mise à jour n°2 : 40 % restauré"
    assert first["Message-ID"] == "<one@lifeline>" and first["List-Id"] == "Lifeline <x.y>"
    assert first.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert "<b>restauré</b>" in first.get_body(("html",)).get_content()
    assert second["Subject"] == "Plain " + " ".join(["word"] * 60)
    assert not second.is_multipart()
    assert second.get_content().strip() == "only text"


def test_a_header_value_cannot_add_a_header():
    data = build_message(sender="s@x.example", to="t@x.example",
                         subject="Hello\r\nBcc: victim@x.example", text="hi", html=None,
                         message_id="<m@x>")
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Bcc"] is None and parsed["Subject"] == "Hello Bcc: victim@x.example"


def test_a_message_is_auto_generated_dated_in_utc_and_its_ids_use_the_mail_domain(server):
    mailer, recorder = server
    mailer = Mailer(host=mailer.host, port=mailer.port, sender=mailer.sender,
                    domain="status.example.com")
    given = mailer.send(to="ada@acme.example", subject="s", text="t")  # no Message-ID given
    assert given.endswith("@status.example.com>")
    received = recorder.received[-1][2]
    assert received["Message-ID"] == given
    assert received["Auto-Submitted"] == "auto-generated"
    assert received["Date"].datetime.utcoffset().total_seconds() == 0
    # A reply a person wrote would say so; the header is not doubled.
    data = build_message(sender="s@x.example", to="t@x.example", subject="s", text="t",
                         html=None, message_id="<m@x>", headers={"auto-submitted": "no"})
    assert data.lower().count(b"auto-submitted:") == 1
    assert email.message_from_bytes(data, policy=email.policy.strict)["Auto-Submitted"] == "no"


def test_the_date_is_utc_as_a_numeric_zone():
    data = build_message(sender="s@x.example", to="t@x.example", subject="s", text="t",
                         html=None, message_id="<m@x>")
    (date,) = [line for line in data.split(b"\r\n") if line.startswith(b"Date: ")]
    assert date.endswith(b" +0000") and b"GMT" not in date


@pytest.mark.parametrize(("given", "domain"), [
    ("Status.Example.COM", "status.example.com"), ("localhost", "localhost"),
    ("bücher.example", "xn--bcher-kva.example")])
def test_a_message_id_domain_is_a_lower_case_ascii_host_name(given, domain):
    assert message_domain(given) == domain


@pytest.mark.parametrize("given", ["", ".", "a..b", "a b", "_x.example", "x-.example",
                                   "a@b", "<a>", "x" * 64])
def test_anything_else_is_no_message_id_domain(given):
    with pytest.raises(ValueError, match="not a host name"):
        message_domain(given)


def test_an_unreachable_server_says_it_is_down():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MailFailed) as failed:
        Mailer(host="127.0.0.1", port=port, sender="s@x.example", timeout=2).send(
            to="t@x.example", subject="s", text="t")
    assert failed.value.server_down is True


def test_a_non_ascii_address_goes_with_smtputf8_or_bounces_where_it_is_not_offered(server):
    mailer, recorder = server  # aiosmtpd offers SMTPUTF8
    mailer.send(to="jöe@acme.example", subject="s", text="t")
    assert recorder.received[-1][1] == ["jöe@acme.example"]
    assert recorder.received[-1][2]["To"] == "jöe@acme.example"

    strict = Recorder(pipelining=True)
    with smtp_server_with(strict, enable_SMTPUTF8=False) as port:
        plain = Mailer(host="127.0.0.1", port=port, sender="s@lifeline.example")
        with plain.connection() as connection:
            with pytest.raises(MailFailed) as refused:
                connection.send(to="jöe@acme.example", subject="s", text="t")
            assert (refused.value.bounced, refused.value.permanent) == (True, True)
            connection.send(to="ok@acme.example", subject="s", text="t")
    assert [to for _, to, _ in strict.received] == [["ok@acme.example"]]


def test_a_refused_recipient_is_a_bounce_and_a_refused_sender_is_an_outage(server):
    mailer, _ = server
    with pytest.raises(MailFailed) as bounced:
        mailer.send(to=REFUSED, subject="s", text="t")
    assert (bounced.value.bounced, bounced.value.server_down) == (True, False)
    refused_sender = Mailer(host=mailer.host, port=mailer.port, sender=REFUSED_SENDER)
    with pytest.raises(MailFailed) as down:
        refused_sender.send(to="ok@acme.example", subject="s", text="t")
    assert (down.value.bounced, down.value.server_down) == (False, True)


def test_long_and_non_ascii_headers_keep_to_76_characters():
    data = build_message(sender="Équipe Lifeline <status@lifeline.example>", to="t@x.example",
                         subject="Mise à jour : " + "données restaurées " * 8, text="t",
                         html=None, message_id="<m@x>",
                         headers={"List-Id": "Lifeline incident " + "word " * 20 + "<l.example>"})
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 76
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Subject"] == "Mise à jour : " + " ".join(["données restaurées"] * 8)
    assert parsed["From"].addresses[0].display_name == "Équipe Lifeline"
    assert parsed["From"].addresses[0].addr_spec == "status@lifeline.example"
