"""Webhook delivery over HTTP(S): what reaches a real local receiver, and what never leaves for a refused address.

Receivers are real ``ThreadingHTTPServer``s on 127.0.0.1. ``socket.create_connection`` is replaced by
a spy that records every address the client asks for and only ever really connects on loopback (or
to the receiver it is told to route to), so no test sends a packet off this machine; a leaked
connection would show up both in the spy and as a connection the receiver counted.
"""

import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chalicelib import webhook_http
from chalicelib.webhook_http import MAX_BODY_BYTES, UrlNotAllowed, check_url, post

REAL_CREATE_CONNECTION = socket.create_connection
PUBLIC = "93.184.216.34"
BODY = b'{"type": "invoice.paid", "id": "evt_1"}'


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on 127.0.0.1 that counts connections and records every request."""

    def __init__(self, respond, tls: ssl.SSLContext | None = None):
        self.requests: list[Seen] = []
        self.connections = 0
        self.release = threading.Event()  # slow responders wait on it; set at teardown
        self.done = threading.Event()
        self.written = 0
        self.outcome = ""
        self.server = _server(self, respond)
        self.port = self.server.server_address[1]
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1", path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _server(receiver: Receiver, respond) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.requests.append(Seen(self.path, headers, self.rfile.read(length)))
            respond(self, receiver)
            receiver.done.set()

        def log_message(self, format, *args):
            pass

    class Server(ThreadingHTTPServer):
        def verify_request(self, request, client_address):
            receiver.connections += 1
            return True

    return Server(("127.0.0.1", 0), Handler)


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    def respond(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


class CountingSocket(socket.socket):
    """A real socket that counts the bytes the client receives through it."""

    received = 0

    def recv_into(self, buffer, nbytes=0, flags=0):
        count = super().recv_into(buffer, nbytes, flags)
        self.received += count
        return count


class ConnectionSpy:
    """Stands in for socket.create_connection: records each (host, port) asked for, then connects to
    ``route_to`` if set, to the address itself if it is loopback, and otherwise (or for an address in
    ``refusing``) refuses."""

    def __init__(self):
        self.addresses: list[tuple[str, int]] = []
        self.sockets: list[CountingSocket] = []
        self.route_to: tuple[str, int] | None = None
        self.refusing: set[str] = set()

    def __call__(self, address, timeout=None, *args, **kwargs):
        self.addresses.append((address[0], address[1]))
        target = self.route_to or address
        if address[0] in self.refusing or not ipaddress.ip_address(target[0]).is_loopback:
            raise ConnectionRefusedError(111, "Connection refused")
        real = REAL_CREATE_CONNECTION(target, timeout)
        sock = CountingSocket(fileno=real.detach())
        sock.settimeout(timeout)
        self.sockets.append(sock)
        return sock


class FakeResolver:
    """Stands in for socket.getaddrinfo: the n-th call answers the n-th address list (the last repeats)."""

    def __init__(self, *answers: list[str]):
        self.answers = answers
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        self.calls.append((host, port, type))
        addresses = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return [_address_info(address, port) for address in addresses]


def _address_info(address: str, port: int):
    if ipaddress.ip_address(address).version == 4:
        return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
    return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))


@pytest.fixture
def receiver():
    started: list[Receiver] = []

    def start(respond=None, tls: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(respond or reply(204), tls))
        return started[-1]

    yield start
    for one in started:
        one.stop()


@pytest.fixture
def spy(monkeypatch) -> ConnectionSpy:
    connection_spy = ConnectionSpy()
    monkeypatch.setattr(socket, "create_connection", connection_spy)
    return connection_spy


@pytest.fixture
def resolving(monkeypatch):
    def install(*answers: list[str]) -> FakeResolver:
        fake = FakeResolver(*answers)
        monkeypatch.setattr(webhook_http, "resolve", fake)
        return fake

    return install


# Delivery to a real receiver


def test_a_2xx_from_a_local_receiver_is_delivered_with_the_body_and_headers_it_saw(receiver, spy):
    hook = receiver(reply(200, b'{"ok": true}'))
    answer = post(hook.url(path="/hook?x=1"), BODY, {"X-Signature": "t=1,v1=abc"}, timeout_s=5, local=True)
    assert (answer.status, answer.delivered, answer.error, answer.excerpt) == (200, True, None, '{"ok": true}')
    assert answer.latency_ms >= 0
    [seen] = hook.requests
    assert seen.path == "/hook?x=1" and seen.body == BODY
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "billing-platform-webhooks/1"
    assert seen.headers["content-length"] == str(len(BODY))
    assert seen.headers["connection"] == "close"
    assert seen.headers["x-signature"] == "t=1,v1=abc"
    assert seen.headers["host"] == f"127.0.0.1:{hook.port}"
    assert spy.addresses == [("127.0.0.1", hook.port)]


def test_a_caller_cannot_override_the_headers_that_frame_the_request(receiver, spy):
    hook = receiver(reply(204))
    framing = {"Host": "metadata.internal", "Content-Length": "999", "Connection": "keep-alive"}
    answer = post(hook.url(), BODY, framing, timeout_s=5, local=True)
    assert (answer.status, answer.delivered) == (204, True)
    [seen] = hook.requests
    assert seen.headers["host"] == f"127.0.0.1:{hook.port}"
    assert (seen.headers["content-length"], seen.headers["connection"]) == (str(len(BODY)), "close")


def test_a_header_that_cannot_be_sent_is_an_error_before_any_connection(receiver, spy):
    hook = receiver()
    answer = post(hook.url(), BODY, {"X-Signature": "abc\r\nX-Injected: 1"}, timeout_s=5, local=True)
    assert answer.status is None and answer.error.startswith("invalid_request:")
    assert spy.addresses == [] and hook.connections == 0


def test_a_500_is_not_delivered_and_its_body_is_recorded_as_the_excerpt(receiver, spy):
    hook = receiver(reply(500, b"database on fire"))
    answer = post(hook.url(), BODY, {}, timeout_s=5, local=True)
    assert (answer.status, answer.delivered, answer.error) == (500, False, None)
    assert answer.excerpt == "database on fire"
    assert len(hook.requests) == 1


def test_the_excerpt_is_the_first_1024_characters_decoded_with_replacement(receiver, spy):
    hook = receiver(reply(200, b"\xff" + "é".encode() * 3000))
    answer = post(hook.url(), BODY, {}, timeout_s=5, local=True)
    assert answer.delivered and len(answer.excerpt) == 1024
    assert answer.excerpt == "\ufffd" + "é" * 1023


def stream_without_end(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    """HTTP/1.0 with no length: the body runs until the connection closes; 64 MiB at most, far more
    than the kernel buffers between the two ends hold."""
    handler.send_response(200)
    handler.end_headers()
    chunk = b"x" * 65_536
    try:
        while receiver.written < 64 * 1024 * 1024:
            handler.wfile.write(chunk)
            receiver.written += len(chunk)
        receiver.outcome = "wrote everything"
    except OSError:
        receiver.outcome = "client hung up"


def test_a_body_over_64_kib_is_read_only_up_to_64_kib_then_the_connection_is_closed(receiver, spy):
    hook = receiver(stream_without_end)
    answer = post(hook.url(), BODY, {}, timeout_s=20, local=True)
    assert (answer.status, answer.delivered, answer.error) == (200, True, None)
    assert answer.excerpt == "x" * 1024
    [sock] = spy.sockets
    # The status line and headers (~100 bytes) plus at most one read-ahead buffer past the cap.
    assert MAX_BODY_BYTES <= sock.received <= MAX_BODY_BYTES + 8192 + 1024
    assert hook.done.wait(10)
    assert hook.outcome == "client hung up" and hook.written < 64 * 1024 * 1024


def answer_after_release(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    receiver.release.wait(10)
    reply(200, b"too late")(handler, receiver)


def test_a_receiver_slower_than_the_timeout_gives_timeout_within_about_the_timeout(receiver, spy):
    hook = receiver(answer_after_release)
    began = time.monotonic()
    answer = post(hook.url(), BODY, {}, timeout_s=0.5, local=True)
    elapsed = time.monotonic() - began
    assert (answer.status, answer.delivered, answer.error) == (None, False, "timeout")
    assert 0.4 <= elapsed < 3
    assert len(hook.requests) == 1


def stall_mid_body(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b"partial")
    receiver.release.wait(10)


def test_a_receiver_that_stalls_mid_body_keeps_its_status_and_reports_timeout(receiver, spy):
    hook = receiver(stall_mid_body)
    began = time.monotonic()
    answer = post(hook.url(), BODY, {}, timeout_s=0.5, local=True)
    assert time.monotonic() - began < 3
    assert (answer.status, answer.error, answer.excerpt) == (200, "timeout", "partial")
    assert answer.delivered  # the receiver acknowledged with its status line; the body is informational


def test_a_redirect_is_returned_as_its_status_and_never_followed(receiver, spy):
    metadata = "http://169.254.169.254/latest/meta-data/"
    hook = receiver(reply(302, b"moved", {"Location": metadata}))
    answer = post(hook.url(), BODY, {}, timeout_s=5, local=True)
    assert (answer.status, answer.delivered, answer.error) == (302, False, None)
    assert len(hook.requests) == 1 and hook.connections == 1
    assert spy.addresses == [("127.0.0.1", hook.port)]


def test_a_refused_connection_is_an_answer_not_an_exception(receiver, spy):
    hook = receiver()
    port = hook.port
    hook.stop()
    answer = post(f"http://127.0.0.1:{port}/hook", BODY, {}, timeout_s=5, local=True)
    assert answer.status is None and not answer.delivered
    assert answer.error.startswith("connection_refused:") and f"127.0.0.1 port {port}" in answer.error


# Pinning: one resolution, and the connection goes to the vetted IP


def test_the_connection_goes_to_the_address_resolved_once_for_the_host(receiver, spy, resolving):
    hook = receiver(reply(200))
    resolver = resolving(["127.0.0.1"])
    answer = post(hook.url(host="localhost"), BODY, {}, timeout_s=5, local=True)
    assert answer.delivered
    assert resolver.calls == [("localhost", hook.port, socket.SOCK_STREAM)]
    assert spy.addresses == [("127.0.0.1", hook.port)]
    assert hook.requests[0].headers["host"] == f"localhost:{hook.port}"


def test_vetted_addresses_are_tried_in_order_until_one_connects(receiver, spy, resolving):
    hook = receiver(reply(200))
    spy.refusing = {"127.0.0.2"}
    resolving(["127.0.0.2", "127.0.0.1"])
    answer = post(hook.url(host="localhost"), BODY, {}, timeout_s=5, local=True)
    assert answer.delivered
    assert spy.addresses == [("127.0.0.2", hook.port), ("127.0.0.1", hook.port)]
    assert len(hook.requests) == 1


# https: TLS to the pinned IP, verified against the URL's host name


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throwaway CA and a certificate it signed for hooks.example.test."""
    from cryptography import x509  # moto[server] brings it (requirements-dev.txt)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = tmp_path_factory.mktemp("tls")
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "webhook test CA")])
    ca = _certificate(x509, ca_name, ca_name, ca_key.public_key(), ca_key, None)
    leaf_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "hooks.example.test")])
    leaf = _certificate(x509, leaf_name, ca_name, leaf_key.public_key(), ca_key, "hooks.example.test")
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "leaf.key").write_bytes(key)
    return folder


def _certificate(x509, subject, issuer, public_key, signing_key, dns_name):
    from cryptography.hazmat.primitives import hashes

    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=dns_name is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    )
    if dns_name is None:
        usage = dict.fromkeys(("content_commitment", "key_encipherment", "data_encipherment", "key_agreement"), False)
        usage |= {"encipher_only": False, "decipher_only": False, "crl_sign": True}
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, **usage), True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture
def tls_receiver(receiver, tls_files):
    """An https receiver on 127.0.0.1 presenting the hooks.example.test certificate; records SNI."""
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files / "leaf.pem", tls_files / "leaf.key")
    context.sni_callback = lambda connection, name, ctx: names.append(name)
    hook = receiver(reply(200, b"ok"), tls=context)
    return hook, names


def test_https_verifies_the_url_host_name_over_a_connection_to_the_pinned_ip(
    tls_receiver, tls_files, spy, resolving, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files / "ca.pem"))
    hook, names = tls_receiver
    resolving(["127.0.0.1"])
    answer = post(hook.url(host="hooks.example.test", scheme="https"), BODY, {}, timeout_s=5, local=True)
    assert (answer.status, answer.delivered, answer.error, answer.excerpt) == (200, True, None, "ok")
    assert names == ["hooks.example.test"]
    assert spy.addresses == [("127.0.0.1", hook.port)]
    assert hook.requests[0].body == BODY and hook.requests[0].headers["host"] == f"hooks.example.test:{hook.port}"


def test_https_refuses_a_certificate_for_another_name(tls_receiver, tls_files, spy, resolving, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files / "ca.pem"))
    hook, names = tls_receiver
    resolving(["127.0.0.1"])
    answer = post(hook.url(host="other.example.test", scheme="https"), BODY, {}, timeout_s=5, local=True)
    assert answer.status is None and answer.error.startswith("tls:") and "mismatch" in answer.error
    assert names == ["other.example.test"] and hook.requests == []


def test_https_refuses_a_certificate_from_an_untrusted_issuer(tls_receiver, spy, resolving, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    hook, _ = tls_receiver
    resolving(["127.0.0.1"])
    answer = post(hook.url(host="hooks.example.test", scheme="https"), BODY, {}, timeout_s=5, local=True)
    assert answer.status is None and answer.error.startswith("tls:")
    assert hook.requests == []


# SSRF: a deployed stage (local=False) never connects to a refused address


REFUSED = [
    (["127.0.0.1"], "127.0.0.1"),
    (["10.0.0.5"], "10.0.0.5"),
    (["169.254.169.254"], "169.254.169.254"),
    (["::1"], "::1"),
    (["::ffff:127.0.0.1"], "::ffff:127.0.0.1"),
    ([PUBLIC, "10.0.0.5"], "10.0.0.5"),
    (["172.16.3.4"], "172.16.3.4"),
    (["192.168.1.1"], "192.168.1.1"),
    (["100.64.0.1"], "100.64.0.1"),
    (["127.8.9.10"], "127.8.9.10"),
    (["0.0.0.0"], "0.0.0.0"),
    (["224.0.0.1"], "224.0.0.1"),
    (["239.255.255.250"], "239.255.255.250"),
    (["240.0.0.1"], "240.0.0.1"),
    (["255.255.255.255"], "255.255.255.255"),
    (["192.0.2.10"], "192.0.2.10"),
    (["::"], "::"),
    (["fe80::1"], "fe80::1"),
    (["fc00::1"], "fc00::1"),
    (["fd12:3456::1"], "fd12:3456::1"),
    (["ff02::1"], "ff02::1"),
    (["ff0e::1"], "ff0e::1"),
    (["::ffff:169.254.169.254"], "::ffff:169.254.169.254"),
    (["::ffff:10.0.0.5"], "::ffff:10.0.0.5"),
    (["::ffff:100.64.0.1"], "::ffff:100.64.0.1"),  # is_global says True on 3.11: judged by the IPv4 inside
    (["::ffff:224.0.0.1"], "::ffff:224.0.0.1"),  # likewise
    (["::127.0.0.1"], "::127.0.0.1"),
    (["2002:a00:5::1"], "2002:a00:5::1"),  # 6to4 around 10.0.5.0
    (["2002:7f00:1::1"], "2002:7f00:1::1"),  # 6to4 around 127.0.0.1
    (["2002:6440:1::1"], "2002:6440:1::1"),  # 6to4 around 100.64.0.1 (CGNAT)
    (["64:ff9b::a9fe:a9fe"], "64:ff9b::a9fe:a9fe"),  # NAT64 of 169.254.169.254
    (["64:ff9b:1::a00:5"], "64:ff9b:1::a00:5"),  # local-use NAT64
    (["2001:0:4136:e378:8000:63bf:3fff:fdd2"], "2001:0:4136:e378:8000:63bf:3fff:fdd2"),  # Teredo
    (["fec0::1"], "fec0::1"),
    (["2001:db8::1"], "2001:db8::1"),
]


@pytest.mark.parametrize(("addresses", "refused"), REFUSED, ids=[r for _, r in REFUSED])
def test_a_name_resolving_to_a_refused_address_is_never_connected_to(addresses, refused, receiver, spy, resolving):
    hook = receiver(reply(200))
    spy.route_to = ("127.0.0.1", hook.port)  # any leaked connection would land on the receiver
    resolver = resolving(addresses)
    answer = post(hook.url(host="hooks.example.test", scheme="https"), BODY, {}, timeout_s=5)
    assert (answer.status, answer.delivered, answer.error) == (None, False, f"address_not_allowed: {refused}")
    assert len(resolver.calls) == 1
    assert spy.addresses == []
    assert hook.connections == 0 and hook.requests == []


PUBLIC_ADDRESSES = [PUBLIC, "2606:4700:4700::1111", f"::ffff:{PUBLIC}", "2002:5db8:d822::1", "64:ff9b::5db8:d822"]


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_a_public_address_is_connected_to_by_its_pinned_ip(address, spy, resolving):
    resolving([address])
    answer = post("https://hooks.example.test/hook", BODY, {}, timeout_s=5)
    assert spy.addresses == [(address, 443)]  # the spy refuses it: nothing leaves this machine
    assert answer.status is None and answer.error.startswith("connection_refused:")


def test_a_local_stage_also_allows_loopback_but_nothing_else(spy, resolving):
    resolving(["127.0.0.5", "::1"])
    spy.refusing = {"127.0.0.5", "::1"}  # seen by the spy, then refused
    post("https://hooks.example.test/hook", BODY, {}, timeout_s=5, local=True)
    assert spy.addresses == [("127.0.0.5", 443), ("::1", 443)]
    for private in ("10.0.0.5", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1"):
        resolving([private])
        answer = post("https://hooks.example.test/hook", BODY, {}, timeout_s=5, local=True)
        assert answer.error == f"address_not_allowed: {private}"
    assert len(spy.addresses) == 2


def test_plain_http_locally_goes_only_to_a_loopback_address(receiver, spy, resolving):
    hook = receiver(reply(200))
    spy.route_to = ("127.0.0.1", hook.port)
    resolving([PUBLIC])  # fine for https, but plain http is only for a receiver on this machine
    answer = post(hook.url(host="localhost"), BODY, {}, timeout_s=5, local=True)
    assert answer.error == f"address_not_allowed: {PUBLIC}"
    assert spy.addresses == [] and hook.connections == 0


def test_a_name_that_resolves_public_then_private_is_refused_the_second_time(receiver, spy, resolving):
    hook = receiver(reply(200))
    resolver = resolving([PUBLIC], ["127.0.0.1"])
    url = f"https://rebind.example.test:{hook.port}/hook"
    check_url(url, local=False)
    first = post(url, BODY, {}, timeout_s=5)
    assert spy.addresses == [(PUBLIC, hook.port)] and first.error.startswith("connection_refused:")
    second = post(url, BODY, {}, timeout_s=5)
    assert (second.status, second.error) == (None, "address_not_allowed: 127.0.0.1")
    assert len(resolver.calls) == 2  # once per post: the connection never resolves the name again
    assert spy.addresses == [(PUBLIC, hook.port)]
    assert hook.connections == 0 and hook.requests == []


@pytest.mark.parametrize(
    ("url", "local", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", False, "url_scheme_not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", True, "url_scheme_not_allowed"),
        ("https://169.254.169.254/latest/meta-data/", False, "url_host_not_allowed"),
        ("https://169.254.169.254/latest/meta-data/", True, "url_host_not_allowed"),
        ("https://[fd00:ec2::254]/latest/meta-data/", False, "url_host_not_allowed"),
    ],
)
def test_a_literal_metadata_url_is_refused_before_any_lookup_or_connection(url, local, code, spy, resolving):
    resolver = resolving([PUBLIC])
    answer = post(url, BODY, {}, timeout_s=5, local=local)
    assert answer.status is None and answer.error.startswith(f"{code}: ")
    assert resolver.calls == [] and spy.addresses == []


# check_url: the syntax-level policy at endpoint creation


def refusal(url: str, *, local: bool) -> str:
    with pytest.raises(UrlNotAllowed) as raised:
        check_url(url, local=local)
    assert str(raised.value)
    return raised.value.code


def test_check_url_accepts_public_https_urls():
    for url in ("https://hooks.example.com/billing", "https://93.184.216.34:8443/x?y=1", "https://[2606:4700::1]/"):
        check_url(url, local=False)
    check_url("https://hooks.example.com/" + "a" * (2048 - 26), local=False)


def test_deployed_stages_accept_https_only():
    for url in ("http://hooks.example.com/", "http://127.0.0.1:8000/", "http://localhost/", "ftp://example.com/"):
        assert refusal(url, local=False) == "url_scheme_not_allowed"
    assert refusal("javascript:alert(1)", local=False) in ("url_scheme_not_allowed", "url_invalid")


def test_http_locally_is_allowed_only_to_loopback_hosts():
    for url in ("http://127.0.0.1:8000/hook", "http://localhost:8000/hook", "http://[::1]:8000/hook"):
        check_url(url, local=True)
    for url in ("http://hooks.example.com/", "http://10.0.0.5/", "http://127.0.0.2/", "http://localhost.evil.test/"):
        assert refusal(url, local=True) == "url_scheme_not_allowed"


def test_check_url_refuses_credentials_in_the_url():
    for url in ("https://user:pass@hooks.example.com/", "https://user@hooks.example.com/", "https://a\\@127.0.0.1/"):
        assert refusal(url, local=False) == "url_invalid"


def test_check_url_refuses_a_missing_host_an_overlong_url_and_control_characters():
    for url in ("https:///hook", "https://", "https://hooks.example.com:99999/", "https://[::1/", "https://a b.com/"):
        assert refusal(url, local=False) == "url_invalid"
    assert refusal("https://hooks.example.com/" + "a" * 2048, local=False) == "url_invalid"
    assert refusal("https://hooks.example.com/\r\nHost: x", local=False) == "url_invalid"


def test_check_url_judges_ip_literal_hosts_by_the_address_policy():
    for host in ("10.0.0.5", "127.0.0.1", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]", "[fe80::1]", "224.0.0.1"):
        assert refusal(f"https://{host}/hook", local=False) == "url_host_not_allowed"
    check_url("https://127.0.0.1:8443/hook", local=True)
    assert refusal("https://10.0.0.5/hook", local=True) == "url_host_not_allowed"


def test_check_url_refuses_numeric_hosts_that_are_not_dotted_quads_and_localhost_names():
    for host in ("2130706433", "0x7f.1", "127.1", "0177.0.0.1", "localhost", "api.localhost"):
        assert refusal(f"https://{host}/hook", local=False) == "url_host_not_allowed"
