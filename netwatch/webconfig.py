"""TLS and basic auth for the HTTP endpoints: the Prometheus exporter-toolkit
web configuration file (`--web-config-file`), the file node_exporter and
Prometheus itself read (exporter-toolkit's docs/web-configuration.md)::

    tls_server_config:
      cert_file: server.crt              # relative paths: from this file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (the default)
      client_ca_file: clients-ca.crt     # with RequireAndVerifyClientCert only
      min_version: TLS12                 # TLS12 (default) or TLS13; max_version likewise
      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]  # TLS 1.2; Go's names
      prefer_server_cipher_suites: true
    http_server_config:
      http2: true                        # accepted; these servers speak HTTP/1.1
      headers: {X-Content-Type-Options: nosniff}
    basic_auth_users:                    # user: bcrypt hash (never the password)
      prometheus: $2y$10$...

The pieces::

    load(path) -> WebConfig      raises WebConfigError, a UserError naming
                                 file:line: key.path for every problem
    WebConfig.tls                the ssl.SSLContext, built and checked at load
    WebConfig.auth               BasicAuth, or None when no users are listed
    serve_metrics(...)           prometheus_client's `make_wsgi_app` on a
                                 threaded wsgiref server (agent, loadprobe)
    guard_asgi(app, web)         basic auth and headers for an ASGI app, and
    ssl_context_factory(web)     its TLS, through uvicorn's public seam
                                 (operations center)

Where this departs from exporter-toolkit, it refuses rather than ignores:
inline `cert`/`key`/`client_ca`, `client_allowed_sans`, `curve_preferences`,
`rate_limit`, client auth types other than NoClientCert and
RequireAndVerifyClientCert, TLS 1.0/1.1, and a `tls_server_config` without
cert_file and key_file (the toolkit falls back to plain HTTP there). The file
is read once, at start: restart the service to pick up a renewed certificate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import re
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Annotated, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import bcrypt
from prometheus_client import make_wsgi_app
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from netwatch.constants import WEB_CONFIG_HELP, WEB_CONFIG_OPTION
from netwatch.errors import UserError
from netwatch.topology.source import (
    KeyPath,
    Located,
    Problem,
    YamlSyntaxError,
    format_path,
    parse_yaml,
    read_source,
)

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    import uvicorn
    from prometheus_client.registry import Collector
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

WWW_AUTHENTICATE = 'Basic realm="netwatch", charset="UTF-8"'
HANDSHAKE_TIMEOUT_S = 10.0  # a client that connects and says nothing holds one thread this long
REQUEST_TIMEOUT_S = 30.0
VERIFIED_MAX = 256  # remembered good credentials (keyed digests), cleared when full

# Go's names (exporter-toolkit's cipher_suites: tls.CipherSuites(), TLS 1.0-1.2)
# -> OpenSSL's. TLS 1.3's suites are not configurable, in Go as here.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
NO_CLIENT_CERT, REQUIRE_CLIENT_CERT = "NoClientCert", "RequireAndVerifyClientCert"
# exporter-toolkit's headers and, where it restricts them, their values.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# Keys exporter-toolkit knows and this module does not do, and why.
UNSUPPORTED = {
    "cert": "inline certificates are not supported here: use cert_file",
    "key": "inline keys are not supported here: use key_file",
    "client_ca": "an inline client CA is not supported here: use client_ca_file",
    "client_allowed_sans": "not supported here: issue client certificates from a CA "
    "that signs only the clients allowed",
    "curve_preferences": "not supported here (OpenSSL's defaults are used)",
    "rate_limit": "not supported here",
}
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")


class WebConfigError(UserError):
    """The web configuration file cannot be read or is not valid: one line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


# -- the file's shape -----------------------------------------------------------


def _tls_version(text: str) -> str:
    if text in ("TLS10", "TLS11"):
        raise ValueError(f"{text} is not offered here (TLS 1.0 and 1.1 are obsolete): use TLS12")
    if text not in TLS_VERSIONS:
        raise ValueError(f"expected TLS12 or TLS13, got {text!r}")
    return text


def _client_auth(text: str) -> str:
    if text in (NO_CLIENT_CERT, REQUIRE_CLIENT_CERT):
        return text
    if text in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
        raise ValueError(
            f"{text} does not verify the certificate and is not supported here: "
            f"use {REQUIRE_CLIENT_CERT} with client_ca_file"
        )
    if text == "VerifyClientCertIfGiven":
        raise ValueError(
            f"{text} lets clients in without a certificate and is not supported here: "
            f"use {REQUIRE_CLIENT_CERT} with client_ca_file, or {NO_CLIENT_CERT}"
        )
    raise ValueError(f"expected {NO_CLIENT_CERT} or {REQUIRE_CLIENT_CERT}, got {text!r}")


def _cipher(name: str) -> str:
    if name not in CIPHER_SUITES:
        raise ValueError(f"unknown cipher suite {name!r} (known: {', '.join(CIPHER_SUITES)})")
    return name


def _user(name: str) -> str:
    if ":" in name or not name:
        raise ValueError("a basic auth user name is not empty and has no ':'")
    return name


def _bcrypt_hash(text: str) -> str:
    match = _BCRYPT.fullmatch(text)
    if match is None or not 4 <= int(match[1]) <= 31:
        raise ValueError(
            "expected a bcrypt hash ($2y$10$ and 53 characters), not a password: "
            "make one with htpasswd -nBC 10 \"\" | tr -d ':\\n'"
        )
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TLSServerConfig(_Model):
    cert_file: str
    key_file: str
    client_auth_type: Annotated[str, AfterValidator(_client_auth)] = NO_CLIENT_CERT
    client_ca_file: str | None = None
    min_version: Annotated[str, AfterValidator(_tls_version)] = "TLS12"
    max_version: Annotated[str, AfterValidator(_tls_version)] = "TLS13"
    cipher_suites: list[Annotated[str, AfterValidator(_cipher)]] = []
    prefer_server_cipher_suites: bool = True
    cert: object = None
    key: object = None
    client_ca: object = None
    client_allowed_sans: object = None
    curve_preferences: object = None

    @field_validator(
        "cert", "key", "client_ca", "client_allowed_sans", "curve_preferences", mode="before"
    )
    @classmethod
    def _refuse(cls, value: object, info: ValidationInfo) -> object:
        raise ValueError(UNSUPPORTED[info.field_name or ""])

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        verify = self.client_auth_type == REQUIRE_CLIENT_CERT
        if verify and not self.client_ca_file:
            raise ValueError(f"client_auth_type {REQUIRE_CLIENT_CERT} needs client_ca_file")
        if self.client_ca_file and not verify:
            raise ValueError(
                f"client_ca_file is set but client_auth_type is {self.client_auth_type}: "
                f"set {REQUIRE_CLIENT_CERT} to require client certificates"
            )
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError(
                f"min_version {self.min_version} is above max_version {self.max_version}"
            )
        return self


class HTTPServerConfig(_Model):
    http2: bool = True  # accepted for compatibility: these servers speak HTTP/1.1
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name not in HEADERS:
                raise ValueError(f"header {name!r} cannot be set (these can: {', '.join(HEADERS)})")
            allowed = HEADERS[name]
            if value and allowed and value not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
        return headers


class WebConfigFile(_Model):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: (
        dict[Annotated[str, AfterValidator(_user)], Annotated[str, AfterValidator(_bcrypt_hash)]]
        | None
    ) = None
    rate_limit: object = None

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _refuse(cls, value: object, info: ValidationInfo) -> object:
        raise ValueError(UNSUPPORTED[info.field_name or ""])


_MODELS: dict[KeyPath, type[BaseModel]] = {
    (): WebConfigFile,
    ("tls_server_config",): TLSServerConfig,
    ("http_server_config",): HTTPServerConfig,
}


# -- what the servers use -------------------------------------------------------


class BasicAuth:
    """Checks an ``Authorization: Basic`` header against bcrypt hashes.

    As exporter-toolkit does: one bcrypt comparison at a time (the CPU goes
    to scrapes, not to guessers), and an unknown user costs a comparison
    too (against another user's hash), so timing does not tell users apart.
    Good credentials are remembered as keyed digests (a key made at start),
    so a scrape every 15 s, or a page's many requests, pays bcrypt once.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        if not users:
            raise ValueError("no users")
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._decoy = next(iter(self._users.values()))
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> bool:
        """True if `authorization` (the header's value) names a user with its password."""
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        digest = hmac.digest(self._key, user.encode() + b":" + password, "sha256")
        if hashed is not None and digest in self._verified:
            return True
        with self._lock:
            try:
                good = bcrypt.checkpw(password, hashed if hashed is not None else self._decoy)
            except ValueError:  # over bcrypt's 72 bytes: no hash of it can match
                good = False
            if not good or hashed is None:
                return False
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified.add(digest)
        return True


def _basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).partition(b":")
        name = user.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (name, password) if sep else None


@dataclass(frozen=True)
class WebConfig:
    """A checked web configuration file, ready for a server."""

    source: str
    tls: ssl.SSLContext | None
    auth: BasicAuth | None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def scheme(web: WebConfig | None) -> str:
    """``https`` or ``http``: for the URLs a command prints."""
    return web.scheme if web is not None else "http"


# -- reading the file -----------------------------------------------------------


def add_argument(parser: argparse.ArgumentParser) -> None:
    """`--web-config-file PATH`, the same in every command that serves HTTP."""
    parser.add_argument(WEB_CONFIG_OPTION, metavar="PATH", help=WEB_CONFIG_HELP)


def load_option(path: str | None) -> WebConfig | None:
    """`load` for a command's `--web-config-file` (None: not given)."""
    return None if path is None else load(path)


def load(path: str | Path) -> WebConfig:
    name = str(path)
    text = read_source(path, WebConfigError)
    try:
        located, duplicates = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise WebConfigError([Problem(name, exc.line, "", exc.message)]) from None
    problems = [Problem(name, line, format_path(p), message) for p, line, message in duplicates]
    data = {} if located.data is None else located.data  # an empty file configures nothing
    if not isinstance(data, dict):
        raise WebConfigError([*problems, Problem(name, 1, "", "expected a mapping of keys")])
    try:
        parsed = WebConfigFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problem(name, located, err) for err in exc.errors())
        raise WebConfigError(sorted(problems, key=lambda p: (p.line or 0, p.path))) from None
    if problems:
        raise WebConfigError(problems)
    tls = None
    if parsed.tls_server_config is not None:
        base = Path(path).absolute().parent  # relative paths: from the file, as the toolkit does
        try:
            tls = _ssl_context(parsed.tls_server_config, base)
        except _FileProblem as exc:
            key = ("tls_server_config", exc.key)
            problem = Problem(name, located.line_of(key), format_path(key), exc.message)
            raise WebConfigError([problem]) from None
    users = parsed.basic_auth_users or {}
    http = parsed.http_server_config or HTTPServerConfig()
    return WebConfig(
        source=name,
        tls=tls,
        auth=BasicAuth(users) if users else None,
        headers=tuple((k, v) for k, v in http.headers.items() if v),
    )


def _problem(name: str, located: Located, err: ErrorDetails) -> Problem:
    path: KeyPath = tuple(p for p in err["loc"] if p != "[key]")
    kind = err["type"]
    secret = path[:1] == ("basic_auth_users",)  # a hash, or a password written by mistake
    if kind == "extra_forbidden":
        model = _MODELS.get(path[:-1])
        known = [k for k in (model.model_fields if model else ()) if k not in UNSUPPORTED]
        hint = f" (expected one of: {', '.join(known)})" if known else ""
        message = f"unknown key {path[-1]!r}{hint}"
    elif kind == "missing":
        message = "missing required key"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = "expected a mapping"
    elif kind == "list_type":
        message = "expected a list"
    elif kind == "value_error":
        message = str(err["msg"]).removeprefix("Value error, ")
    elif secret:
        message = str(err["msg"])
    else:
        message = f"{err['msg']}, got {err.get('input')!r}"
    return Problem(name, located.line_of(path), format_path(path), message)


class _FileProblem(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


def _ssl_context(config: TLSServerConfig, base: Path) -> ssl.SSLContext:
    files = {"cert_file": base / config.cert_file, "key_file": base / config.key_file}
    if config.client_ca_file:
        files["client_ca_file"] = base / config.client_ca_file
    for key, file in files.items():
        try:
            file.open("rb").close()
        except OSError as exc:
            raise _FileProblem(key, f"cannot read {file}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[config.min_version]
    context.maximum_version = TLS_VERSIONS[config.max_version]
    try:
        context.load_cert_chain(files["cert_file"], files["key_file"])
    except ssl.SSLError as exc:
        raise _FileProblem(
            "cert_file",
            f"{files['cert_file']} and {files['key_file']} are not a PEM certificate "
            f"and its private key: {exc.reason or exc}",
        ) from None
    if config.client_auth_type == REQUIRE_CLIENT_CERT:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=files["client_ca_file"])
        except ssl.SSLError as exc:
            raise _FileProblem(
                "client_ca_file",
                f"no PEM CA certificate in {files['client_ca_file']}: {exc.reason or exc}",
            ) from None
    if config.cipher_suites:
        try:
            context.set_ciphers(":".join(CIPHER_SUITES[name] for name in config.cipher_suites))
        except ssl.SSLError as exc:
            raise _FileProblem("cipher_suites", f"not available here: {exc}") from None
    if config.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return context


# -- prometheus_client's endpoints (agent, loadprobe) ------------------------------


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S  # StreamRequestHandler: a slow client is cut off

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape otherwise


class MetricsServer(ThreadingMixIn, WSGIServer):
    """One thread per connection; with TLS the handshake happens there, under
    a timeout, never in the accepting thread (prometheus_client's own TLS
    server shakes hands as it accepts: one silent client stops every scrape)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None) -> None:
        infos = socket.getaddrinfo(*address, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family = infos[0][0]
        self.tls = tls
        host, port = infos[0][4][:2]
        super().__init__((str(host), int(port)), _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # plain HTTP, no or a bad client certificate, a silent client
        with conn:
            super().finish_request(conn, client_address)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"metrics-http-{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join()


def serve_metrics(
    registry: Collector, host: str, port: int, web: WebConfig | None = None
) -> MetricsServer:
    """Serve `registry` at http(s)://host:port/ in background threads, with
    the file's TLS, basic auth and headers; OSError if it cannot listen."""
    server = MetricsServer((host, port), web.tls if web is not None else None)
    server.set_app(guard_wsgi(make_wsgi_app(registry), web))
    server.start()
    return server


def guard_wsgi(app: WSGIApplication, web: WebConfig | None) -> WSGIApplication:
    """`app` behind the file's basic auth, its responses with the file's headers."""
    if web is None:
        return app
    auth, extra = web.auth, list(web.headers)

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if auth is not None and not auth.check(environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [*_UNAUTHORIZED_HEADERS, *extra])
            return [_UNAUTHORIZED_BODY]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return app(environ, start)

    return guarded


_UNAUTHORIZED_HEADERS = [
    ("WWW-Authenticate", WWW_AUTHENTICATE),
    ("Content-Type", "text/plain; charset=utf-8"),
]
_UNAUTHORIZED_BODY = b"401 Unauthorized\n"


# -- uvicorn (the operations center) ---------------------------------------------


def guard_asgi(app: ASGIApp, web: WebConfig | None) -> ASGIApp:
    """`app` behind the file's basic auth (bcrypt off the event loop), its
    responses with the file's headers."""
    if web is None or (web.auth is None and not web.headers):
        return app
    auth = web.auth
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in web.headers]
    refused = [(k.lower().encode(), v.encode()) for k, v in _UNAUTHORIZED_HEADERS]

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        if auth is not None:
            header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            value = header.decode("latin-1") if header is not None else None
            if not await asyncio.to_thread(auth.check, value):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                start = {"type": "http.response.start", "status": 401}
                await send({**start, "headers": [*refused, *extra]})
                await send({"type": "http.response.body", "body": _UNAUTHORIZED_BODY})
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await app(scope, receive, send_with_headers)

    return guarded


def ssl_context_factory(
    web: WebConfig | None,
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None:
    """For `uvicorn.Config(ssl_context_factory=...)`: the file's SSLContext
    as it is (uvicorn's own `ssl_*` settings cannot say min_version)."""
    tls = web.tls if web is not None else None
    if tls is None:
        return None

    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return tls

    return factory
