"""The fleet's MQTT identities: one project CA, the broker's server
certificate, and a client certificate per town and for the operations center.

::

    netwatch pki init                  DIR/ca.crt ca.key broker.crt broker.key
    netwatch pki issue nishiki         DIR/nishiki.crt nishiki.key   (CN=nishiki)
    netwatch pki issue-opscenter       DIR/opscenter.crt opscenter.key (CN=opscenter)
    netwatch pki show                  each certificate: CN, names, expiry

A client's identity is its certificate's CN: the broker takes it as the user
name (Mosquitto's ``use_identity_as_username``) and its ACL lets a town write
only under ``netwatch/v1/<CN>/`` (`netwatch.brokerconf`).  So the CN of a
town's certificate is exactly its id in topology.yaml, and no town can be
called "opscenter".

Keys are EC P-256 (made in a millisecond, so the lab makes its PKI at every
`lab up`), written 0600 before a byte of them is; every file is written to a
temporary name and renamed, so a crash leaves the old file or the new one.
Nothing is overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netwatch.errors import UserError
from netwatch.topology import DEFAULT_PATH, Topology, load_for_command

DEFAULT_DIR = "/etc/netwatch/pki"
OPSCENTER_CN = "opscenter"  # the operations center's identity at the broker
BROKER = "broker"  # the broker's files: broker.crt, broker.key
CA = "ca"
CA_DAYS = 3650
LEAF_DAYS = 825  # what browsers and most TLS stacks still accept for a leaf


class PkiError(UserError):
    """A PKI file cannot be made or read; one line, exit 2."""


@dataclass(frozen=True)
class Pki:
    """Where each file of a PKI directory lives."""

    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert(CA)


def init(pki: Pki, broker_names: Sequence[str], *, force: bool = False) -> list[Path]:
    """A new CA and the broker's certificate for `broker_names` (IP
    addresses or DNS names; the first is its CN).  Returns the files made."""
    if not broker_names:
        raise PkiError("the broker needs at least one name (--broker-name)")
    _refuse_existing([pki.key(CA), pki.cert(CA), pki.key(BROKER), pki.cert(BROKER)], force)
    pki.root.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "netwatch CA")])
    now = _now()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pki.key(CA), key)
    _write_cert(pki.cert(CA), ca)
    _issue(pki, BROKER, broker_names[0], server_names=broker_names)
    return [pki.cert(CA), pki.key(CA), pki.cert(BROKER), pki.key(BROKER)]


def issue(pki: Pki, cn: str, *, force: bool = False) -> list[Path]:
    """A client certificate whose CN is `cn`, signed by the CA in `pki`."""
    if cn in (CA, BROKER):
        raise PkiError(f"{cn!r} names the PKI's own files; it cannot be a client's identity")
    _refuse_existing([pki.key(cn), pki.cert(cn)], force)
    _issue(pki, cn, cn, server_names=())
    return [pki.cert(cn), pki.key(cn)]


def _issue(pki: Pki, file: str, cn: str, *, server_names: Sequence[str]) -> None:
    ca_key, ca_cert = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    ExtendedKeyUsageOID.SERVER_AUTH
                    if server_names
                    else ExtendedKeyUsageOID.CLIENT_AUTH
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
        )
    _write_key(pki.key(file), key)
    _write_cert(pki.cert(file), builder.sign(ca_key, hashes.SHA256()))


@dataclass(frozen=True)
class CertInfo:
    file: Path
    cn: str
    names: tuple[str, ...]
    not_after: dt.datetime
    is_ca: bool


def show(pki: Pki) -> list[CertInfo]:
    """Every certificate in the directory, CA first."""
    found = sorted(pki.root.glob("*.crt"), key=lambda p: (p != pki.ca_cert, p.name))
    return [_info(path) for path in found]


def _info(path: Path) -> CertInfo:
    cert = _read_cert(path)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(v) for v in san.get_values_for_type(x509.IPAddress)) + tuple(
            san.get_values_for_type(x509.DNSName)
        )
    except x509.ExtensionNotFound:
        names = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    cn = str(cns[0].value) if cns else ""
    return CertInfo(path, cn, names, cert.not_valid_after_utc, is_ca)


# -- files ---------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,  # ECDHE with an EC key
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _refuse_existing(paths: Sequence[Path], force: bool) -> None:
    there = [p for p in paths if p.exists()]
    if there and not force:
        raise PkiError(f"{there[0]} exists: keep it, or make new ones with --force")


def _load_ca(pki: Pki) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(pki.key(CA).read_bytes(), password=None)
    except FileNotFoundError:
        raise PkiError(f"no CA in {pki.root}: run `netwatch pki init` first") from None
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"{pki.key(CA)}: {_reason(exc)}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{pki.key(CA)}: not an EC key made by `netwatch pki init`")
    return key, _read_cert(pki.cert(CA))


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: {_reason(exc)}") from None


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise PkiError(f"{path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# -- the command -----------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pki",
        help="make the MQTT CA and client certificates (one per town, one for the ops center)",
        description=(
            "Make the fleet's MQTT identities: a CA, the broker's server certificate and "
            "client certificates whose CN is the town id (or 'opscenter'). The broker takes "
            "the CN as the user name and lets a town write only under netwatch/v1/<its id>/. "
            "Private keys are written mode 0600; nothing is overwritten without --force."
        ),
    )
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"PKI directory (default {DEFAULT_DIR})")
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument("--force", action="store_true", help="replace files that exist")
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    p_init = actions.add_parser("init", help="a new CA and the broker's certificate")
    p_init.add_argument(
        "--broker-name",
        action="append",
        metavar="NAME",
        help="the broker's IP address or DNS name, repeatable (default: the host of the "
        "topology's opscenter.mqtt)",
    )
    p_init.set_defaults(run=_run_init)
    p_issue = actions.add_parser("issue", help="a town's client certificate (CN = the town id)")
    p_issue.add_argument("town", help="a town id of the topology")
    p_issue.set_defaults(run=_run_issue)
    actions.add_parser(
        "issue-opscenter", help="the operations center's client certificate (CN = opscenter)"
    ).set_defaults(run=_run_issue_opscenter)
    actions.add_parser("show", help="list the certificates: CN, names, expiry").set_defaults(
        run=_run_show
    )


def _run_init(args: argparse.Namespace) -> int:
    names = args.broker_name
    if not names:
        from netwatch.mqtt.broker import parse_broker_url

        names = [parse_broker_url(_topology(args).opscenter.mqtt)[0]]
    _made(init(Pki(Path(args.dir)), names, force=args.force))
    return 0


def _run_issue(args: argparse.Namespace) -> int:
    towns = [t.id for t in _topology(args).towns]
    if args.town == OPSCENTER_CN:
        raise PkiError(f"{OPSCENTER_CN!r} is the operations center's identity, not a town's")
    if args.town not in towns:
        raise PkiError(f"unknown town {args.town!r} (towns: {', '.join(towns)})")
    _made(issue(Pki(Path(args.dir)), args.town, force=args.force))
    return 0


def _run_issue_opscenter(args: argparse.Namespace) -> int:
    _made(issue(Pki(Path(args.dir)), OPSCENTER_CN, force=args.force))
    return 0


def _run_show(args: argparse.Namespace) -> int:
    infos = show(Pki(Path(args.dir)))
    if not infos:
        raise PkiError(f"no certificates in {args.dir}: run `netwatch pki init` first")
    for info in infos:
        kind = "CA" if info.is_ca else ("server" if info.names else "client")
        names = f"  names {', '.join(info.names)}" if info.names else ""
        until = f"{info.not_after:%Y-%m-%d}"
        print(f"{info.file.name:<20} {kind:<6} CN={info.cn:<12} until {until}{names}")
    return 0


def _topology(args: argparse.Namespace) -> Topology:
    return load_for_command(args.topology)


def _made(paths: Sequence[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")
