"""Where the broker is, and how a client proves who it is to it.

::

    mqtt://HOST[:1883]            plain TCP: a broker on loopback, a unit test
    mqtts://[USER@]HOST[:8883]    TLS 1.2 or newer; the broker's certificate is
                                  checked against --ca (else the system's CAs)
                                  and its name against HOST; with --cert and
                                  --key the client shows its own certificate,
                                  whose CN is who it is (a town id, or
                                  "opscenter"): the broker's ACL lets a town
                                  write only under netwatch/v1/<its id>/

A password never comes from the URL: a URL shows in ``ps``, in logs and in
topology.yaml.  It comes from a file (``--mqtt-password-file``) or the
environment (``NETWATCH_MQTT_PASSWORD``), and only over TLS.  ``str(broker)``
is what logs and messages show: scheme, user, host and port, nothing secret.

Every mistake is found at start, as one `BadBrokerUrl` line: a bad URL, a
certificate that does not load, a key without its certificate, credentials
or client files over plain TCP.
"""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netwatch.mqtt.errors import BadBrokerUrl

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PASSWORD_ENV = "NETWATCH_MQTT_PASSWORD"


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    ca: Path | None = None  # None: the system's trust store
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    @cached_property
    def tls_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (None over plain TCP); built once, so a
        file that does not load is found at start (`check`)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert is not None:
                context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        except (OSError, ssl.SSLError) as exc:
            raise BadBrokerUrl(f"{self}: the TLS files do not load: {_reason(exc)}") from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for `aiomqtt.Client` (hostname first)."""
        return {
            "hostname": self.host,
            "port": self.port,
            "tls_context": self.tls_context,
            "username": self.username,
            "password": self.password,
        }

    def arguments(self) -> list[str]:
        """``--ca/--cert/--key`` that `add_arguments` reads back: how a
        command line names this client's TLS files (empty when none)."""
        named = (("--ca", self.ca), ("--cert", self.cert), ("--key", self.key))
        return [word for flag, path in named if path is not None for word in (flag, str(path))]

    def check(self) -> Broker:
        """Load the TLS files now; raises `BadBrokerUrl`.  Returns self."""
        _ = self.tls_context
        return self


def parse_broker(
    url: str,
    *,
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Broker:
    """A checked `Broker` from a URL and the TLS files and credentials given
    beside it; raises `BadBrokerUrl` with one line that names no secret."""
    parts = urlsplit(url)
    shown = _without_password(url)
    try:
        port = DEFAULT_PORTS.get(parts.scheme, 0) if parts.port is None else parts.port
    except ValueError:
        port = 0
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        raise BadBrokerUrl(f"expected a broker URL like mqtts://HOST:8883, got {shown!r}")
    if port < 1:
        raise BadBrokerUrl(f"the port in {shown!r} is not a number 1-65535")
    if parts.password is not None:
        raise BadBrokerUrl(
            f"{shown}: a password in the broker URL would show in ps and in logs; "
            f"give it in a file (--mqtt-password-file) or in ${PASSWORD_ENV}"
        )
    tls = parts.scheme == "mqtts"
    user = username or parts.username or None
    if not tls and (user or password or ca or cert or key):
        raise BadBrokerUrl(
            f"{shown}: credentials and TLS files need an mqtts:// URL "
            "(they would cross the network in clear, or be ignored)"
        )
    if (cert is None) != (key is None):
        raise BadBrokerUrl(f"{shown}: a client certificate needs both --cert and --key")
    if password is not None and not user:
        raise BadBrokerUrl(f"{shown}: a password needs a user name (--mqtt-username or USER@)")
    for flag, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise BadBrokerUrl(f"{flag} {os.fspath(path)}: {exc.strerror or exc}") from None
    broker = Broker(
        host=parts.hostname,
        port=port,
        tls=tls,
        ca=Path(ca) if ca else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
        username=user,
        password=password,
    )
    return broker.check()


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt[s]://HOST[:PORT]`` -> ``(host, port)``, for callers that need
    only the address; raises `BadBrokerUrl`."""
    parts = urlsplit(url)
    try:
        port = DEFAULT_PORTS.get(parts.scheme, 0) if parts.port is None else parts.port
    except ValueError:
        port = 0
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port < 1:
        raise BadBrokerUrl(
            f"expected a broker URL like mqtts://HOST:8883, got {_without_password(url)!r}"
        )
    return parts.hostname, port


# -- the command line ---------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The TLS and credential options every MQTT client command takes."""
    group = parser.add_argument_group(
        "MQTT over TLS (mqtts:// URLs)",
        "The broker's certificate is checked against --ca (default: the system's CAs). "
        "With --cert/--key the client shows its own certificate; its CN is its identity "
        "(a town id, or 'opscenter'; `netwatch pki` makes them). A password is read from "
        f"--mqtt-password-file or ${PASSWORD_ENV}, never from the URL.",
    )
    group.add_argument("--ca", metavar="FILE", help="CA certificate(s) that signed the broker's")
    group.add_argument("--cert", metavar="FILE", help="this client's certificate (PEM)")
    group.add_argument("--key", metavar="FILE", help="this client's private key (PEM, mode 0600)")
    group.add_argument("--mqtt-username", metavar="NAME", help="user name, if the broker uses them")
    group.add_argument(
        "--mqtt-password-file",
        metavar="FILE",
        help=f"a file whose first line is the password (else ${PASSWORD_ENV}, if set)",
    )


def from_arguments(url: str, args: argparse.Namespace) -> Broker:
    """`parse_broker` with what `add_arguments` read; raises `BadBrokerUrl`."""
    password = os.environ.get(PASSWORD_ENV) or None
    if args.mqtt_password_file:
        try:
            lines = Path(args.mqtt_password_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadBrokerUrl(
                f"--mqtt-password-file {args.mqtt_password_file}: {_reason(exc)}"
            ) from None
        password = lines[0] if lines else ""
    return parse_broker(
        url,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        username=args.mqtt_username,
        password=password,
    )


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{name}"
    return str(exc) or type(exc).__name__
