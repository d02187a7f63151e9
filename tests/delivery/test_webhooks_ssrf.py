"""Webhooks reach the public internet only: every spelling of an inside address is refused
when an endpoint is saved and when it is called, a name is looked up once and the call goes
to the address that was checked, a redirect is never followed, and a refusal at send time
reads like any unreachable endpoint. Receivers are real HTTP servers on 127.0.0.1, reached
through the explicit allowance; nothing is ever sent anywhere else."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlmodel import select

from contacts.core.audit import Actor
from contacts.core.db import session_scope, utcnow
from contacts.core.errors import ConfigError
from contacts.core.services import services
from contacts.core.settings import load_secrets, load_settings
from contacts.delivery import outbox, webhook_lane
from contacts.delivery.models import OutboxMessage
from contacts.delivery.webhook import (
    UNREACHABLE,
    RefusedEndpoint,
    WebhookPolicy,
    check_endpoint,
)

ROOT = Path(__file__).resolve().parents[2]
ACTOR = Actor.system("test")

# Loopback, private, link-local, unique-local, multicast, unspecified, reserved and shared
# addresses, in the spellings parsers disagree on.
INSIDE = [
    "http://127.0.0.1/", "http://127.1/", "http://0x7f000001/", "http://2130706433/",
    "http://017700000001/", "http://0177.0.0.1/", "http://0x7f.0.0.1/", "http://127.0.0.1./",
    "HTTP://127.0.0.1:8080/hook", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
    "http://[::1]/", "http://[0:0:0:0:0:0:0:1]:9000/", "http://[::]/", "http://0.0.0.0/",
    "http://0/", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/",
    "http://100.64.0.1/", "http://10.0.0.1/", "http://172.16.5.4/", "http://192.168.1.1/",
    "http://[fd00::1]/", "http://[fe80::1]/", "http://224.0.0.1/",
    "http://[ff02::1]/", "http://240.0.0.1/", "http://255.255.255.255/", "http://198.18.0.1/",
    "http://[64:ff9b::a00:1]/", "http://[2002:7f00:1::]/", "http://[::127.0.0.1]/",
    "https://２１３０７０６４３３/", "http://１２７．０．０．１/",
]
# Spellings that hide the host from one parser or another.
AMBIGUOUS = [
    "http://evil@127.0.0.1/", "http://public.example:pw@127.0.0.1/",
    "http://127.0.0.1\\@public.example/", "http://%31%32%37.0.0.1/", "http://127.0.0.1%00/",
    "http://[::1/", "http://127.0.0.1:99999/", "http:// 127.0.0.1/", "http://1.2.3.4.5/",
    "http://public.example.0x7f/", "http://127.0.0.1/\r\nX-Injected: 1",
    "http://[fe80::1%25eth0]/", "http://[2001:4860::8888%25eth0]/",
]
# Names that resolve inside (localhost through /etc/hosts; the rest through the resolver
# replaced below) and one that resolves to nothing: all refused with the same words.
RESOLVED_INSIDE = ["http://localhost/", "http://LOCALHOST./", "http://localhost:8080/",
                   "http://ⓛocalhost/", "http://hooks.customer.example/",
                   "http://mixed.customer.example/", "http://six.customer.example/",
                   "http://nowhere.customer.example/"]
FAKE_DNS = {"hooks.customer.example": ["10.0.0.1"],
            "mixed.customer.example": ["93.184.216.34", "10.0.0.1"],
            "six.customer.example": ["fd12:3456::1"],
            "public.customer.example": ["93.184.216.34"]}


class Resolver:
    """The system resolver, except for the names in `names` (and any other name of
    customer.example, which does not resolve); `lookups` lists every name looked up."""

    def __init__(self, real):
        self.real, self.names, self.lookups = real, dict(FAKE_DNS), []

    def getaddrinfo(self, host, port, *args, **kwargs):
        self.lookups.append(host)
        if host in self.names:
            return [(socket.AF_INET6 if ":" in address else socket.AF_INET,
                     socket.SOCK_STREAM, 6, "", (address, port))
                    for address in self.names[host]]
        if host.endswith(".customer.example"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.real(host, port, *args, **kwargs)


@pytest.fixture
def resolver(monkeypatch):
    made = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", made.getaddrinfo)
    return made


@pytest.fixture
def loopback_only(monkeypatch):
    """Any connection to an address other than 127.0.0.1 or ::1 fails the test, so a guard
    that let one through could not send traffic there."""
    attempts: list = []
    real = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1"):
            attempts.append(address)
            raise ConnectionRefusedError(f"the test refuses traffic to {address[0]}")
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


class Receiver:
    """A real HTTP endpoint on 127.0.0.1: answers `status` (and `location`, if set)."""

    def __init__(self, status: int = 204, location: str | None = None):
        self.calls: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(dict(self.headers))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.host_port = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("url", INSIDE)
def test_every_spelling_of_an_inside_address_is_refused_at_save(url, loopback_only):
    with pytest.raises(RefusedEndpoint, match="not a public internet address"):
        check_endpoint(url, WebhookPolicy())
    assert loopback_only == []


@pytest.mark.parametrize("url", AMBIGUOUS)
def test_a_url_that_parsers_read_two_ways_is_refused_at_save(url, loopback_only):
    with pytest.raises(RefusedEndpoint, match="^the webhook URL"):
        check_endpoint(url, WebhookPolicy())
    assert loopback_only == []


@pytest.mark.parametrize("url", RESOLVED_INSIDE)
def test_a_name_resolving_inside_is_refused_without_saying_where_it_points(
        url, resolver, loopback_only):
    with pytest.raises(RefusedEndpoint) as refused:
        check_endpoint(url, WebhookPolicy())
    assert refused.value.message == ("the webhook URL's host must resolve to public internet "
                                     "addresses only")
    assert len(resolver.lookups) == 1 and loopback_only == []


@pytest.mark.parametrize("url", ["https://8.8.8.8/hooks", "https://[2001:4860:4860::8888]/",
                                 "http://[::ffff:8.8.8.8]:8443/", "http://[64:ff9b::808:808]/",
                                 "https://public.customer.example/lifeline?account=1"])
def test_public_endpoints_are_accepted(url, resolver):
    assert check_endpoint(url, WebhookPolicy()).port in (80, 443, 8443)


def test_the_refusal_names_the_kind_of_address_typed():
    for url, kind in (("http://127.1/", "loopback"), ("http://10.1.2.3/", "private"),
                      ("http://169.254.169.254/", "link-local"),
                      ("http://[fd00::5]/", "unique-local"), ("http://0x0/", "unspecified"),
                      ("http://100.64.1.1/", "shared (carrier-grade NAT)"),
                      ("http://[::ffff:10.0.0.1]/", "private (IPv4 inside IPv6)")):
        with pytest.raises(RefusedEndpoint) as refused:
            check_endpoint(url, WebhookPolicy())
        assert f"address is {kind}" in refused.value.message


def test_production_takes_https_only(make_app, resolver):
    app = make_app(app_env="production", server_session_cookie_secure=True)
    policy = WebhookPolicy.from_settings(services(app).settings)
    with pytest.raises(RefusedEndpoint, match="must be an https:// address"):
        check_endpoint("http://public.customer.example/hook", policy)
    assert check_endpoint("https://public.customer.example/hook", policy).scheme == "https"


def test_production_refuses_to_start_with_the_allowance(tmp_path):
    with pytest.raises(ConfigError, match="production refuses webhooks allow_private_hosts"):
        load_settings({"app_env": "production", "server_session_cookie_secure": True,
                       "webhooks_allow_private_hosts": ["127.0.0.1:9123"],
                       "secrets": load_secrets(tmp_path, {}, generate=True)})
    load_secrets(tmp_path / "keys", {}, generate=True)
    ran = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "current"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LIFELINE_ENV": "production",
             "LIFELINE_SECRETS_KEYS_DIR": str(tmp_path / "keys"),
             "LIFELINE_SERVER_SESSION_COOKIE_SECURE": "true",
             "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
             "LIFELINE_WEBHOOKS_ALLOW_PRIVATE_HOSTS": "127.0.0.1:9123"})
    assert ran.returncode == 2
    assert ran.stderr.strip().count("\n") == 0
    assert "LIFELINE_WEBHOOKS_ALLOW_PRIVATE_HOSTS" in ran.stderr


def test_the_allowance_takes_exact_address_and_port_pairs(tmp_path):
    secrets = load_secrets(tmp_path, {}, generate=True)
    settings = load_settings({"secrets": secrets}, environ={
        "LIFELINE_WEBHOOKS_ALLOW_PRIVATE_HOSTS": "127.0.0.1:9123, [::1]:9124"})
    assert settings.webhooks_allow_private_hosts == ["127.0.0.1:9123", "[::1]:9124"]
    for bad in ("localhost:9123", "127.0.0.1", "127.0.0.1:0", "::1:9124", "10.0.0.0/8:80"):
        with pytest.raises(ConfigError, match="must be an IP address and a port"):
            load_settings({"secrets": secrets, "webhooks_allow_private_hosts": [bad]})
    policy = WebhookPolicy.from_settings(settings)
    assert check_endpoint("http://127.0.0.1:9123/", policy).port == 9123
    for other in ("http://127.0.0.1:9124/", "http://127.0.0.2:9123/", "http://10.0.0.1:9123/"):
        with pytest.raises(RefusedEndpoint):
            check_endpoint(other, policy)


# -- at send time ---------------------------------------------------------------------------


def _queue_webhook(app, key: str, url: str) -> None:
    with session_scope(services(app).engine) as session:
        outbox.enqueue_rows(session=session, rows=[outbox.webhook_row(
            cipher=services(app).crypto.cipher, key=key, purpose="test", now=utcnow(),
            topic=outbox.Topic("update", "upd_1", "webhook", "acc_1", "acc_1"),
            webhook=outbox.SignedWebhook(url=url, body='{"n": 1}', signature="sha256=00"))])


def _send(app, policy: WebhookPolicy, now=None) -> outbox.DrainReport:
    return webhook_lane.drain_webhooks(engine=services(app).engine,
                                       cipher=services(app).crypto.cipher,
                                       policy=policy, now=now or utcnow())


def _errors(app) -> dict[str, str]:
    with session_scope(services(app).engine) as session:
        return {row.key: row.last_error for row in session.exec(select(OutboxMessage))}


def test_an_inside_endpoint_is_refused_when_called_and_reads_as_unreachable(
        app, receivers, resolver, loopback_only):
    """An endpoint saved before the guard, or whose name now resolves inside (rebinding),
    is not called; the outbox says the same of it as of a port nobody listens on."""
    listening = receivers()
    _queue_webhook(app, "refused-literal", f"http://127.0.0.1:{listening.port}/hook")
    _queue_webhook(app, "refused-spelling", f"http://0x7f000001:{listening.port}/hook")
    _queue_webhook(app, "refused-name", f"http://hooks.customer.example:{listening.port}/")
    _queue_webhook(app, "refused-mapped", f"http://[::ffff:127.0.0.1]:{listening.port}/")
    closed = _closed_port()
    _queue_webhook(app, "unreachable", f"http://127.0.0.1:{closed}/hook")
    policy = WebhookPolicy(allow_private=frozenset({f"127.0.0.1:{closed}"}))
    report = _send(app, policy)
    assert (report.sent, report.retried) == (0, 5)
    assert listening.calls == [] and loopback_only == []
    assert set(_errors(app).values()) == {UNREACHABLE}


def test_a_name_is_looked_up_once_and_called_at_the_checked_address(app, receivers, resolver,
                                                                    loopback_only, monkeypatch):
    """After the check, a second lookup would say 10.0.0.1: there is none; the server still
    sees its own name in the Host header."""
    receiver = receivers()
    resolver.names["rebinding.customer.example"] = ["127.0.0.1"]
    _queue_webhook(app, "pinned", f"http://rebinding.customer.example:{receiver.port}/h")
    look_up = resolver.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        answer = look_up(host, port, *args, **kwargs)
        resolver.names["rebinding.customer.example"] = ["10.0.0.1"]  # from now on
        return answer

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    report = _send(app, WebhookPolicy(allow_private=frozenset({receiver.host_port})))
    assert report.sent == 1
    assert resolver.lookups == ["rebinding.customer.example"]
    assert receiver.calls[0]["Host"] == f"rebinding.customer.example:{receiver.port}"
    assert loopback_only == []


def test_a_redirect_is_never_followed(app, receivers, loopback_only):
    elsewhere = receivers()
    redirecting = receivers(status=307, location=f"http://{elsewhere.host_port}/steal")
    _queue_webhook(app, "redirected", f"http://{redirecting.host_port}/hook")
    policy = WebhookPolicy(allow_private=frozenset({redirecting.host_port,
                                                    elsewhere.host_port}))
    report = _send(app, policy)
    assert (report.sent, report.retried) == (0, 1)
    assert len(redirecting.calls) == 1 and elsewhere.calls == []
    assert redirecting.calls[0]["X-Lifeline-Signature"] == "sha256=00"
    assert _errors(app)["redirected"] == "the endpoint answered 307; redirects are not followed"
    report = _send(app, policy, now=utcnow() + timedelta(hours=1))  # retried: never followed
    assert report.retried == 1 and elsewhere.calls == []


def _authority_and_certificate(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway certificate authority, and a certificate it signed for `name`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def build(subject: str, issuer_name, signing_key, public_key, *, authority: bool):
        now = utcnow()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer_name).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=authority, path_length=None),
                                  critical=True))
        if not authority:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]),
                                            critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    authority_key = ec.generate_private_key(ec.SECP256R1())
    authority_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test authority")])
    authority = build("Test authority", authority_name, authority_key,
                      authority_key.public_key(), authority=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = build(name, authority_name, authority_key, key.public_key(), authority=False)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(authority.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def test_https_names_the_host_to_the_server_and_checks_its_certificate(tmp_path, receivers,
                                                                       resolver, loopback_only):
    """The call goes to the checked address, but TLS asks for (SNI) and verifies the
    certificate of the name in the URL: another name on the same address is refused."""
    import ssl

    from contacts.delivery import webhook, webhook_client

    authority, certificate, key = _authority_and_certificate(tmp_path, "hooks.customer.example")
    receiver = receivers()
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(certificate, key)
    asked_for: list[str | None] = []
    served.sni_callback = lambda _sock, name, _context: asked_for.append(name)
    receiver.server.socket = served.wrap_socket(receiver.server.socket, server_side=True)
    resolver.names["hooks.customer.example"] = ["127.0.0.1"]
    resolver.names["other.customer.example"] = ["127.0.0.1"]
    policy = WebhookPolicy(allow_private=frozenset({receiver.host_port}),
                           https_only=True, deadline_seconds=5,
                           tls=ssl.create_default_context(cafile=str(authority)))
    webhook_client.post(url=f"https://hooks.customer.example:{receiver.port}/h", body=b"{}",
                 headers={"X-Lifeline-Signature": "sha256=00"}, policy=policy)
    assert asked_for == ["hooks.customer.example"]
    assert receiver.calls[0]["Host"] == f"hooks.customer.example:{receiver.port}"
    with pytest.raises(webhook.WebhookFailed, match=UNREACHABLE):
        webhook_client.post(url=f"https://other.customer.example:{receiver.port}/h", body=b"{}",
                     headers={}, policy=policy)
    assert len(receiver.calls) == 1  # the wrong certificate got no request
    assert loopback_only == []
