"""The transport under pg8000 is libpq's: TCP with Nagle off and keepalive on; no TLS asked on a Unix socket."""

import socket
import ssl

import pytest

from chalicelib.db import connection


def test_a_tcp_connection_to_the_database_has_nagle_off_and_keepalive_on_as_libpq_sets_them():
    with socket.create_server(("127.0.0.1", 0)) as server:
        sock = connection._tcp_socket({"host": "127.0.0.1", "port": server.getsockname()[1]}, timeout=5)
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.gettimeout() == 5
        finally:
            sock.close()
    assert connection._tcp_socket({"unix_sock": "/tmp/.s.PGSQL.5432"}, timeout=5) is None


@pytest.mark.parametrize("mode", ["", "sslmode=allow", "sslmode=prefer"])
def test_on_a_unix_socket_the_default_sslmodes_ask_for_no_tls_as_libpq_does(mode):
    params = connection._params_from_url(f"postgresql://app@/billing?host=/tmp/sockets&{mode}")
    assert params["unix_sock"] == "/tmp/sockets/.s.PGSQL.5432" and params["ssl_context"] is False


def test_on_a_unix_socket_an_explicit_require_still_demands_tls():
    params = connection._params_from_url("postgresql://app@/billing?host=/tmp/sockets&sslmode=require")
    assert isinstance(params["ssl_context"], ssl.SSLContext)
