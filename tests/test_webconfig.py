"""`--web-config-file` (netwatch.webconfig): the exporter-toolkit file read
and refused key by key, and real HTTPS on loopback from every kind of
server that takes it: prometheus_client's WSGI app (the agent and
loadprobe) and uvicorn (the operations center, as a process). Also: every
HTTP endpoint binds to loopback unless told otherwise."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import ipaddress
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry, Gauge
from starlette.types import Receive, Scope, Send

from backoffice import command as backoffice_command
from loadprobe import cli as loadprobe_cli
from loadprobe.live import LiveMetrics
from netwatch import cli as netwatch_cli
from netwatch import webconfig
from netwatch.webconfig import WebConfig, WebConfigError

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()  # the cheapest cost


# -- a throwaway PKI ------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_cert.subject if issuer_cert is not None else _name(subject))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if usage is None:  # the CA
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
    else:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("netwatch test CA", ca_key, None)
    _write(out / "ca", ca, None)
    for name, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(out / name, _issue(f"{name}.test", key, (ca, ca_key), usage=usage), key)
    return Pki(
        out, out / "ca.crt", out / "server.crt", out / "server.key",
        out / "client.crt", out / "client.key",
    )  # fmt: skip


def config_file(directory: Path, text: str, name: str = "web.yml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


TLS_AND_AUTH = f"""\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
basic_auth_users:
  prometheus: {HASH}
"""

CLIENT_CERTS = """\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  min_version: TLS13
"""


# -- the file -------------------------------------------------------------------


def test_a_good_file_gives_a_context_and_an_auth_checker(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_file(pki.dir, CLIENT_CERTS + f"basic_auth_users:\n  prometheus: {HASH}\n")
    monkeypatch.chdir(tmp_path)  # relative paths are the file's, not the working directory's
    web = webconfig.load(path)
    assert web.tls is not None
    assert web.tls.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.scheme == "https"
    assert web.auth is not None
    right = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    wrong = "Basic " + base64.b64encode(b"prometheus:guess").decode()
    stranger = "Basic " + base64.b64encode(f"root:{PASSWORD}".encode()).decode()
    assert web.auth.check(right)
    assert web.auth.check(right)  # remembered
    assert not web.auth.check(wrong)
    assert not web.auth.check(stranger)
    assert not web.auth.check(None)
    assert not web.auth.check("Bearer abc")
    assert not web.auth.check("Basic !!!")
    assert not web.auth.check("Basic " + base64.b64encode(b"prometheus:" + b"x" * 100).decode())


def test_cipher_suites_are_go_names_for_tls12(pki: Pki) -> None:
    text = (
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
    )
    web = webconfig.load(config_file(pki.dir, text, "ciphers.yml"))
    assert web.tls is not None
    tls12 = [c["name"] for c in web.tls.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256"]


def test_an_empty_file_configures_nothing(tmp_path: Path) -> None:
    web = webconfig.load(config_file(tmp_path, ""))
    assert (web.tls, web.auth, web.headers) == (None, None, ())


def test_an_unknown_key_is_named_with_its_path_and_line(pki: Pki) -> None:
    text = "tls_server_config:\n  cert_file: server.crt\n  key_flie: server.key\n"
    path = config_file(pki.dir, text, "typo.yml")
    with pytest.raises(WebConfigError) as caught:
        webconfig.load(path)
    lines = str(caught.value).splitlines()
    assert f"{path}:1: tls_server_config.key_file: missing required key" in lines
    unknown = next(line for line in lines if "key_flie" in line)
    assert unknown.startswith(f"{path}:3: tls_server_config.key_flie: unknown key 'key_flie'")
    assert "expected one of: cert_file, key_file, client_auth_type" in unknown


def test_a_password_instead_of_a_bcrypt_hash_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    path = config_file(tmp_path, "basic_auth_users:\n  alice: hunter2\n  bob: 12345\n")
    with pytest.raises(WebConfigError) as caught:
        webconfig.load(path)
    message = str(caught.value)
    assert f"{path}:2: basic_auth_users.alice: expected a bcrypt hash" in message
    assert f"{path}:3: basic_auth_users.bob:" in message
    assert "hunter2" not in message
    assert "12345" not in message


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError) as caught:
        webconfig.load(tmp_path / "nope.yml")
    assert str(caught.value) == f"{tmp_path / 'nope.yml'}: no such file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_server_config: [1]\n", "1: tls_server_config: expected a mapping"),
        ("tls_server_config:\n  cert_file: a\n", "tls_server_config.key_file: missing"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  client_auth_type: VerifyClientCertIfGiven\n",
            "4: tls_server_config.client_auth_type: VerifyClientCertIfGiven lets clients in "
            "without a certificate and is not supported here",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "1: tls_server_config: client_auth_type RequireAndVerifyClientCert needs "
            "client_ca_file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n",
            "4: tls_server_config.min_version: TLS11 is not offered here",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n"
            "  max_version: TLS12\n",
            "min_version TLS13 is above max_version TLS12",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [RC4, X]\n",
            "tls_server_config.cipher_suites[0]: unknown cipher suite 'RC4'",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cert: PEM\n",
            "4: tls_server_config.cert: inline certificates are not supported here",
        ),
        ("rate_limit:\n  burst: 1\n", "1: rate_limit: not supported here"),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "X-Frame-Options: expected one of deny, sameorigin",
        ),
        ("http_server_config:\n  headers:\n    Server: x\n", "header 'Server' cannot be set"),
        ("basic_auth_users:\n  'a:b': x\n", "basic_auth_users.a:b: a basic auth user name"),
        ("tls_server_config:\n  cert_file: [\n", "YAML syntax error"),
        ("- a\n", "expected a mapping of keys"),
        ("tls_server_config:\n  cert_file: no.crt\n  key_file: no.key\n", "2: tls_server_"),
    ],
)
def test_refusals_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = config_file(tmp_path, text)
    with pytest.raises(WebConfigError) as caught:
        webconfig.load(path)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_certificate_files_are_checked_at_load(pki: Pki, tmp_path: Path) -> None:
    missing = config_file(tmp_path, "tls_server_config:\n  cert_file: no.crt\n  key_file: x\n")
    with pytest.raises(WebConfigError, match=r":2: tls_server_config.cert_file: cannot read .*"):
        webconfig.load(missing)
    swapped = config_file(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_key}\n  key_file: {pki.server_cert}\n",
    )
    with pytest.raises(WebConfigError, match="are not a PEM certificate and its private key"):
        webconfig.load(swapped)
    no_ca = config_file(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {swapped}\n",
    )
    with pytest.raises(WebConfigError, match=r":5: tls_server_config.client_ca_file: no PEM CA"):
        webconfig.load(no_ca)


@pytest.mark.parametrize(
    "argv",
    [
        ["netwatch", "agent", "--town", "nishiki"],
        ["netwatch", "opscenter"],
        ["loadprobe", "run", "--town", "nishiki"],
    ],
)
def test_a_bad_file_stops_each_command_with_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = netwatch_cli.main if argv[0] == "netwatch" else loadprobe_cli.main
    args = [*argv[1:], "--topology", str(ROOT / "topology.yaml")]
    assert main([*args, "--web-config-file", str(tmp_path / "nope.yml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(" ".join(argv[:2]))
    assert err.endswith(f": {tmp_path / 'nope.yml'}: no such file\n")
    assert err.count("\n") == 1


# -- prometheus_client's endpoint (agent, loadprobe) ---------------------------------


def _client(pki: Pki, *, cert: bool = False, max_tls12: bool = False) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    if max_tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return httpx.Client(verify=context, timeout=5)


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("netwatch_test_up", "a test gauge", registry=registry).set(1)
    return registry


@contextlib.contextmanager
def metrics_server(registry: CollectorRegistry, web: WebConfig | None) -> Iterator[str]:
    server = webconfig.serve_metrics(registry, "127.0.0.1", 0, web)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.close()


def test_metrics_over_tls_with_basic_auth(pki: Pki, registry: CollectorRegistry) -> None:
    web = webconfig.load(config_file(pki.dir, TLS_AND_AUTH, "tls-auth.yml"))
    with metrics_server(registry, web) as address, _client(pki) as client:
        url = f"https://{address}/metrics"
        good = client.get(url, auth=("prometheus", PASSWORD))
        assert good.status_code == 200
        assert "netwatch_test_up 1.0" in good.text
        assert good.headers["X-Content-Type-Options"] == "nosniff"
        for auth in (None, ("prometheus", "guess"), ("root", PASSWORD)):
            refused = client.get(url, auth=auth)
            assert refused.status_code == 401, auth
            assert refused.headers["WWW-Authenticate"].startswith("Basic")
            assert "netwatch_test_up" not in refused.text
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{address}/metrics", auth=("prometheus", PASSWORD), timeout=5)


def test_metrics_a_silent_client_does_not_stop_scrapes(
    pki: Pki, registry: CollectorRegistry
) -> None:
    web = webconfig.load(config_file(pki.dir, TLS_AND_AUTH, "tls-auth.yml"))
    with metrics_server(registry, web) as address, _client(pki) as client:
        host, port = address.split(":")
        with socket.create_connection((host, int(port))):  # connects, never says hello
            started = time.monotonic()
            assert client.get(f"https://{address}/", auth=("prometheus", PASSWORD)).is_success
            assert time.monotonic() - started < 2


def test_metrics_client_certificates_required(pki: Pki, registry: CollectorRegistry) -> None:
    web = webconfig.load(config_file(pki.dir, CLIENT_CERTS, "mtls.yml"))
    with metrics_server(registry, web) as address:
        with _client(pki, cert=True) as client:
            assert client.get(f"https://{address}/metrics").status_code == 200
        with _client(pki) as client, pytest.raises(httpx.TransportError):
            client.get(f"https://{address}/metrics")
        # min_version: TLS13
        with _client(pki, cert=True, max_tls12=True) as client, pytest.raises(httpx.TransportError):
            client.get(f"https://{address}/metrics")


def test_metrics_without_a_file_are_plain_http(registry: CollectorRegistry) -> None:
    with metrics_server(registry, None) as address:
        assert "netwatch_test_up" in httpx.get(f"http://{address}/metrics", timeout=5).text


def test_loadprobe_live_metrics_take_the_file(pki: Pki) -> None:
    web = webconfig.load(config_file(pki.dir, TLS_AND_AUTH, "tls-auth.yml"))
    live = LiveMetrics("nishiki")
    live.start_run("backup")
    port = live.serve("127.0.0.1", 0, web)
    assert live.server is not None
    try:
        with _client(pki) as client:
            url = f"https://127.0.0.1:{port}/metrics"
            assert client.get(url).status_code == 401
            assert "loadprobe_run_running" in client.get(url, auth=("prometheus", PASSWORD)).text
    finally:
        live.server.close()


# -- uvicorn (the operations center) --------------------------------------------------


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@contextlib.contextmanager
def uvicorn_server(web: WebConfig) -> Iterator[str]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        config = uvicorn.Config(
            webconfig.guard_asgi(_hello, web),
            log_level="warning",
            lifespan="off",
            ssl_context_factory=webconfig.ssl_context_factory(web),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="webconfig-uvicorn", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield f"127.0.0.1:{listener.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(10)


def test_uvicorn_client_certificates_required(pki: Pki) -> None:
    web = webconfig.load(config_file(pki.dir, CLIENT_CERTS, "mtls.yml"))
    with uvicorn_server(web) as address:
        with _client(pki, cert=True) as client:
            assert client.get(f"https://{address}/").text == "hello"
        with _client(pki) as client, pytest.raises(httpx.TransportError):
            client.get(f"https://{address}/")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{address}/", timeout=5)


def test_uvicorn_basic_auth(pki: Pki) -> None:
    web = webconfig.load(config_file(pki.dir, TLS_AND_AUTH, "tls-auth.yml"))
    with uvicorn_server(web) as address, _client(pki) as client:
        good = client.get(f"https://{address}/", auth=("prometheus", PASSWORD))
        assert (good.status_code, good.text) == (200, "hello")
        assert good.headers["x-content-type-options"] == "nosniff"
        refused = client.get(f"https://{address}/", auth=("prometheus", "guess"))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_opscenter_serves_its_page_api_and_metrics_over_tls_with_auth(
    pki: Pki, tmp_path: Path
) -> None:
    config = config_file(pki.dir, TLS_AND_AUTH, "tls-auth.yml")
    port = _free_port()
    argv = [
        sys.executable, "-m", "netwatch.cli", "opscenter",
        "--topology", str(ROOT / "topology.yaml"),
        "--mqtt", f"mqtt://127.0.0.1:{_free_port()}",  # nobody there: not fatal
        "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "db.sqlite3"),
        "--web-config-file", str(config),
    ]  # fmt: skip
    log = tmp_path / "opscenter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}"
    try:
        with _client(pki) as client:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log.read_text()
                try:
                    client.get(base + "/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            for path in ("/", "/api/v1/fleet", "/metrics"):
                assert client.get(base + path).status_code == 401, path
                good = client.get(base + path, auth=("prometheus", PASSWORD))
                assert good.status_code == 200, path
            assert "netwatch_fleet_" in good.text
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert f"https://127.0.0.1:{port}/" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


# -- loopback by default --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "listen"),
    [
        (["netwatch", "agent", "--town", "nishiki"], "metrics_listen"),
        (["netwatch", "opscenter"], "listen"),
        (["loadprobe", "run", "--town", "nishiki"], "metrics_host"),
        (["loadprobe", "compare", "--town", "nishiki"], "metrics_host"),
        (["loadprobe", "target"], "host"),
    ],
)
def test_every_endpoint_binds_to_loopback_by_default(argv: list[str], listen: str) -> None:
    build = netwatch_cli.build_parser if argv[0] == "netwatch" else loadprobe_cli.build_parser
    args = build().parse_args(argv[1:])
    value = getattr(args, listen)
    host = value.rpartition(":")[0] if ":" in value else value
    assert ipaddress.ip_address(host).is_loopback, (argv, value)
    assert getattr(args, "web_config_file", None) is None


def test_the_reference_application_binds_to_loopback_by_default() -> None:
    parser = argparse.ArgumentParser()
    backoffice_command.add_arguments(parser)
    assert ipaddress.ip_address(parser.parse_args([]).host).is_loopback


@pytest.mark.parametrize(
    "argv",
    [
        ["netwatch", "agent"],
        ["netwatch", "opscenter"],
        ["loadprobe", "run"],
        ["loadprobe", "compare"],
    ],
)
def test_help_says_what_the_file_is(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside the phrases looked for
    build = netwatch_cli.build_parser if argv[0] == "netwatch" else loadprobe_cli.build_parser
    with pytest.raises(SystemExit):
        build().parse_args([*argv[1:], "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--web-config-file PATH" in text
    assert "exporter-toolkit web configuration file" in text
    assert "bcrypt hash" in text
