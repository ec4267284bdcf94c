"""The one HTTP client that delivers tenants' webhooks to URLs they give us, safe against SSRF.

It owns the URL policy (``check_url``: https only, no credentials, a host, 2,048 characters at most;
plain http only to a loopback host and only when ``local``), the address policy (which resolved IPs
may be contacted: public unicast only, plus loopback when ``local``) and one delivery (``post``).

How ``post`` stays on the addresses it vetted:

- The host is resolved once, with the module-level ``resolve`` (``socket.getaddrinfo``; tests
  replace it). If any resolved address is refused, nothing is connected at all.
- It connects with ``socket.create_connection((ip, port), timeout=...)`` to a vetted IP literal,
  never to the name, so there is no second resolution and no DNS-rebinding window. The function is
  looked up on the ``socket`` module at call time so that tests can spy on every connection.
  Vetted addresses are tried in order; only a failure to connect moves on to the next one.
- https verifies the certificate with ``ssl.create_default_context()`` against the URL's host name
  (sent as SNI and checked), though the TCP connection goes to the pinned IP.
- Redirects are never followed: a 3xx is returned as that status (not delivered).

One deadline of ``timeout_s``, started before resolution, bounds connect, the TLS handshake,
sending and every read of the headers and body: each socket operation gets only the time left.
(``getaddrinfo`` itself cannot be interrupted; time it takes is charged to the deadline.) A timeout
before the status line gives ``status=None, error="timeout"``. A timeout after the status line keeps
that status (the receiver has answered; the body is only informational) with ``error="timeout"``
and the body read so far, so ``delivered`` follows the status alone. At most 64 KiB of body is read,
then the connection is closed: a longer body is truncated, not an error.

``post`` never raises; a failure is an ``Answer`` with ``status=None`` and ``error`` one of
``"<url code>: <reason>"`` (``url_scheme_not_allowed``, ``url_host_not_allowed``, ``url_invalid``),
``"address_not_allowed: <ip>"``, ``"dns: ..."``, ``"timeout"``, ``"connection_refused: ..."``,
``"connection: ..."``, ``"tls: ..."``, ``"http: <parse error>"`` or ``"invalid_request: ..."``
(a header the caller passed that cannot be sent).
"""

import http.client
import io
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

resolve = socket.getaddrinfo

MAX_URL_LENGTH = 2048
MAX_BODY_BYTES = 65_536
EXCERPT_CHARS = 1_024
USER_AGENT = "billing-platform-webhooks/1"
_SEND_CHUNK = 16_384
_MAX_ERROR_CHARS = 200

_LOCAL_HTTP_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# IPv6 ranges refused outright: is_global says True for some of them on Python 3.11, and the
# others tunnel to an IPv4 address we cannot judge from here.
_IPV6_REFUSED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "::/96",  # IPv4-compatible (deprecated, RFC 4291); ::127.0.0.1 is "global" on 3.11
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "2001::/32",  # Teredo: the far end of the tunnel is outside our control
        "fec0::/10",  # site-local (deprecated, RFC 3879); "global" on 3.11
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
# A host whose last label is numeric is an IPv4 address to a browser or libc ("2130706433",
# "0x7f.1", "127.1"); only the canonical dotted quad, which ipaddress parses, is accepted.
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Headers that frame the request belong to this client; a caller's value for one is ignored.
_OWNED_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


class UrlNotAllowed(Exception):
    """A webhook URL (or the address its host resolves to) that we will not call; ``code`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Answer:
    """What one delivery got back: the status (None when there was no answer) and a body excerpt."""

    status: int | None
    latency_ms: int
    excerpt: str
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class _Request:
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    data: bytes


@dataclass
class _Exchange:
    started: float | None = None
    status: int | None = None
    body: bytearray = field(default_factory=bytearray)

    def answer(self, error: str | None) -> Answer:
        latency = 0 if self.started is None else round((time.monotonic() - self.started) * 1000)
        excerpt = bytes(self.body).decode("utf-8", errors="replace")[:EXCERPT_CHARS]
        return Answer(self.status, latency, excerpt, error and error[:_MAX_ERROR_CHARS])


def check_url(url: str, *, local: bool) -> None:
    """Syntax-level check, at endpoint creation and before every delivery: https only (when
    ``local``, also http, but only to 127.0.0.1, localhost or ::1); no userinfo; a host; at most
    2,048 ASCII characters. An IP-literal host must pass the address policy; names are not resolved
    here (``post`` judges what they resolve to). Raises UrlNotAllowed."""
    parts = _split(url)
    host = parts.hostname
    if parts.scheme == "http":
        if not (local and host in _LOCAL_HTTP_HOSTS):
            raise UrlNotAllowed("url_scheme_not_allowed", "only https URLs are allowed")
    elif parts.scheme != "https":
        raise UrlNotAllowed("url_scheme_not_allowed", "only https URLs are allowed")
    _check_host(host, local=local)


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_LENGTH:
        raise UrlNotAllowed("url_invalid", f"the URL is longer than {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise UrlNotAllowed("url_invalid", "the URL must be ASCII with no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed("url_invalid", f"the URL cannot be parsed: {exc}") from None
    if "@" in parts.netloc:
        raise UrlNotAllowed("url_invalid", "credentials (user:password@) are not allowed in the URL")
    if not parts.hostname:
        raise UrlNotAllowed("url_invalid", "the URL has no host")
    if port == 0:
        raise UrlNotAllowed("url_invalid", "port 0 is not allowed")
    return parts


def _check_host(host: str, *, local: bool) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not _allowed(address, local=local):
            raise UrlNotAllowed("url_host_not_allowed", f"{host} is not a public address")
        return
    if not _HOST_NAME.fullmatch(host):
        raise UrlNotAllowed("url_invalid", "the host is not a valid name or IP address")
    name = host.rstrip(".")
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        raise UrlNotAllowed("url_host_not_allowed", "a numeric host must be a dotted-quad IPv4 address")
    if not local and (name == "localhost" or name.endswith(".localhost")):
        raise UrlNotAllowed("url_host_not_allowed", f"{host} is not a public host")


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, local: bool) -> bool:
    """Public unicast only: ``is_global`` minus multicast (which 3.11 calls global), with IPv6
    forms that embed an IPv4 address judged by that address. ``local`` adds 127.0.0.0/8 and ::1."""
    if local and any(address in network for network in _LOOPBACK):
        return True
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return _allowed(address.ipv4_mapped, local=False)
        if any(address in network for network in _IPV6_REFUSED):
            return False
        embedded = address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not _allowed(embedded, local=False):
            return False
    return address.is_global and not address.is_multicast


def _address_allowed(text: str, *, scheme: str, local: bool) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if scheme == "http":  # plain http exists only for a receiver on this machine
        return local and any(address in network for network in _LOOPBACK)
    return _allowed(address, local=local)


def post(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float = 10.0, local: bool = False) -> Answer:
    """POST ``body`` (JSON) to ``url`` with ``headers``; never raises, never follows a redirect.
    ``latency_ms`` runs from before connect to the end of the read; see the module for the rest."""
    deadline = time.monotonic() + timeout_s
    exchange = _Exchange()
    try:
        request = _prepare(url, body, headers, local=local)
        exchange.started = time.monotonic()
        _deliver(request, deadline, exchange)
    except (UrlNotAllowed, OSError, http.client.HTTPException, ValueError) as exc:
        return exchange.answer(_describe(exc))
    return exchange.answer(None)


def _prepare(url: str, body: bytes, headers: dict[str, str], *, local: bool) -> _Request:
    check_url(url, local=local)
    parts = urlsplit(url)
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host = parts.hostname
    data = _request_bytes(parts, port != default_port, body, headers)
    found = resolve(host, port, type=socket.SOCK_STREAM)
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    for address in addresses:
        if not _address_allowed(address, scheme=parts.scheme, local=local):
            raise UrlNotAllowed("address_not_allowed", address)
    return _Request(parts.scheme, host, port, addresses, data)


def _request_bytes(parts: SplitResult, explicit_port: bool, body: bytes, headers: dict[str, str]) -> bytes:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    fields = {"content-type": ("Content-Type", "application/json"), "user-agent": ("User-Agent", USER_AGENT)}
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"header {name!r} cannot be sent")
        if name.lower() not in _OWNED_HEADERS:
            fields[name.lower()] = (name, value)
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {host}:{parts.port}" if explicit_port else f"Host: {host}",
        *(f"{name}: {value}" for name, value in fields.values()),
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _deliver(request: _Request, deadline: float, exchange: _Exchange) -> None:
    with _connect(request, deadline) as raw:
        sock = _start_tls(raw, request.host, deadline) if request.scheme == "https" else raw
        with sock:
            _send(sock, request.data, deadline)
            response = http.client.HTTPResponse(_DeadlineSocket(sock, deadline), method="POST")
            response.begin()
            exchange.status = response.status
            while len(exchange.body) < MAX_BODY_BYTES:
                chunk = response.read1(MAX_BODY_BYTES - len(exchange.body))
                if not chunk:
                    break
                exchange.body += chunk


def _connect(request: _Request, deadline: float) -> socket.socket:
    failure: OSError | None = None
    for address in request.addresses:
        try:
            # The pinned IP, never the name: see the module docstring.
            return socket.create_connection((address, request.port), timeout=_remaining(deadline))
        except TimeoutError:
            raise
        except OSError as exc:
            failure = type(exc)(exc.errno, f"{exc.strerror or type(exc).__name__} ({address} port {request.port})")
    raise failure


def _start_tls(raw: socket.socket, host: str, deadline: float) -> ssl.SSLSocket:
    raw.settimeout(_remaining(deadline))
    return ssl.create_default_context().wrap_socket(raw, server_hostname=host)


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(_remaining(deadline))
        view = view[sock.send(view[:_SEND_CHUNK]) :]


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


class _DeadlineSocket:
    """What http.client.HTTPResponse reads from: every receive gets only the time left, so a
    receiver trickling its headers or body cannot stretch the call past the deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(_remaining(self._deadline))
        return self._sock.recv_into(buffer)


_ERRORS: tuple[tuple[type[BaseException], Callable[[Any], str]], ...] = (
    (UrlNotAllowed, lambda e: f"{e.code}: {e}"),
    (TimeoutError, lambda e: "timeout"),
    (socket.gaierror, lambda e: f"dns: {e.strerror or e}"),
    (ssl.SSLCertVerificationError, lambda e: f"tls: {e.verify_message or e.reason}"),
    (ssl.SSLError, lambda e: f"tls: {e.reason or e}"),
    (http.client.HTTPException, lambda e: f"http: {type(e).__name__}"),
    (ConnectionRefusedError, lambda e: f"connection_refused: {e.strerror or e}"),
    (OSError, lambda e: f"connection: {e.strerror or type(e).__name__}"),
    (ValueError, lambda e: f"invalid_request: {e}"),
)


def _describe(exc: BaseException) -> str:
    """A short, stable error string; the first matching kind wins (order matters: SSLError and
    TimeoutError are OSErrors, RemoteDisconnected is both an HTTPException and an OSError)."""
    return next(describe(exc) for kind, describe in _ERRORS if isinstance(exc, kind))
