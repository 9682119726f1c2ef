"""The TCP and HTTP probers against loopback listeners (no lab, no root)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import pytest

from netwatch.agent.probes import PathBinding, Prober, ProbeResult
from netwatch.agent.probes.http import HttpProber
from netwatch.agent.probes.tcp import TcpProber
from netwatch.topology import HostPort

T = TypeVar("T")
LOOPBACK = IPv4Address("127.0.0.1")
LO = PathBinding("lo", 0, LOOPBACK)
FOREIGN_SOURCE = PathBinding("bad", 0, IPv4Address("192.0.2.1"))  # TEST-NET-1, not on this host
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN")
nonlocal_bind = Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0"
needs_local_bind = pytest.mark.skipif(
    nonlocal_bind, reason="ip_nonlocal_bind is set: binding to any address succeeds"
)


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def probe_once(prober: Prober, binding: PathBinding, deadline_s: float = 2.0) -> ProbeResult:
    async def main() -> ProbeResult:
        try:
            return await prober.probe(binding, deadline_s)
        finally:
            await prober.aclose()

    return run(main())


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock
    sock.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


# --- TCP -----------------------------------------------------------------------


def test_tcp_connect_is_ok_and_closes_with_a_fin(listener: socket.socket) -> None:
    result = probe_once(TcpProber(HostPort(LOOPBACK, _port(listener))), LO)
    assert (result.ok, result.outcome) == (True, "ok")
    assert result.rtt_s is not None
    assert 0 < result.rtt_s < 2.0
    listener.settimeout(5)
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(5)
        assert conn.recv(1) == b""  # an orderly close; a reset would raise here


def test_tcp_refused_proves_a_round_trip(closed_port: int) -> None:
    result = probe_once(TcpProber(HostPort(LOOPBACK, closed_port)), LO)
    assert (result.ok, result.outcome) == (True, "refused")
    assert result.rtt_s is not None


def test_tcp_times_out_at_the_deadline() -> None:
    # A full accept queue makes the kernel drop the probe's SYN.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        with socket.create_connection(full.getsockname(), timeout=5):
            start = time.monotonic()
            result = probe_once(TcpProber(HostPort(LOOPBACK, _port(full))), LO, 0.2)
            elapsed = time.monotonic() - start
    assert (result.ok, result.outcome) == (False, "timeout")
    assert 0.15 < elapsed < 2.0


@needs_local_bind
def test_tcp_source_not_on_this_host(listener: socket.socket) -> None:
    result = probe_once(TcpProber(HostPort(LOOPBACK, _port(listener))), FOREIGN_SOURCE)
    assert result == ProbeResult(
        "tcp", False, None, "no_source", "source address 192.0.2.1 is not on this host"
    )


@needs_root
def test_tcp_with_a_mark(listener: socket.socket) -> None:
    result = probe_once(
        TcpProber(HostPort(LOOPBACK, _port(listener))), PathBinding("m", 42, LOOPBACK)
    )
    assert result.outcome == "ok"


# --- HTTP ----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/ok": 200, "/down": 503}.get(self.path, 404)
        body = b"fine\n" if status == 200 else b"no\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()

    def url(self, path: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.thread.join()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


def test_http_expected_status_is_ok(server: _Server) -> None:
    result = probe_once(HttpProber(server.url("/ok"), 200), LO)
    assert (result.ok, result.outcome) == (True, "ok")
    assert result.rtt_s is not None
    assert 0 < result.rtt_s < 2.0


def test_http_other_status_is_bad_status(server: _Server) -> None:
    result = probe_once(HttpProber(server.url("/down"), 200), LO)
    assert (result.ok, result.outcome, result.detail) == (False, "bad_status", "503")
    assert result.rtt_s is not None  # the path did carry the exchange


def test_http_server_that_never_answers_times_out(listener: socket.socket) -> None:
    # Connections complete in the kernel's accept queue; nobody reads the request.
    url = f"http://127.0.0.1:{_port(listener)}/ok"
    start = time.monotonic()
    result = probe_once(HttpProber(url, 200), LO, 0.2)
    elapsed = time.monotonic() - start
    assert (result.ok, result.outcome) == (False, "timeout")
    assert 0.15 < elapsed < 2.0


def test_http_refused_is_an_error(closed_port: int) -> None:
    result = probe_once(HttpProber(f"http://127.0.0.1:{closed_port}/ok", 200), LO)
    assert (result.ok, result.outcome) == (False, "error")
    assert result.detail.startswith("ConnectError")


@needs_local_bind
def test_http_source_not_on_this_host(server: _Server) -> None:
    result = probe_once(HttpProber(server.url("/ok"), 200), FOREIGN_SOURCE)
    assert result == ProbeResult(
        "http", False, None, "no_source", "source address 192.0.2.1 is not on this host"
    )


def test_http_successive_probes_each_open_a_connection(server: _Server) -> None:
    async def main() -> list[ProbeResult]:
        prober = HttpProber(server.url("/ok"), 200)
        try:
            return [await prober.probe(LO, 2.0) for _ in range(3)]
        finally:
            await prober.aclose()

    assert [r.outcome for r in run(main())] == ["ok"] * 3


@needs_root
def test_http_with_a_mark(server: _Server) -> None:
    result = probe_once(HttpProber(server.url("/ok"), 200), PathBinding("m", 42, LOOPBACK))
    assert result.outcome == "ok"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificate")
def test_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    san = "subjectAltName=IP:127.0.0.1"
    subprocess.run(
        ["openssl", *request.split(), "-addext", san, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    srv = _Server(server_tls)
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        ok = probe_once(HttpProber(srv.url("/ok", "https"), 200, tls=trusting), LO)
        untrusted = probe_once(HttpProber(srv.url("/ok", "https"), 200), LO)
    finally:
        srv.close()
    assert (ok.ok, ok.outcome) == (True, "ok")
    assert (untrusted.ok, untrusted.outcome) == (False, "error")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
