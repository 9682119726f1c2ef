"""`netwatch opscenter`: the operations center service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys

from netwatch import webconfig
from netwatch.errors import UserError
from netwatch.mqtt import broker as mqtt_broker
from netwatch.mqtt.errors import BadBrokerUrl
from netwatch.opscenter.fleet import DEFAULT_STALE_AFTER_S
from netwatch.opscenter.service import CLIENT_ID, Opscenter, Settings
from netwatch.opscenter.store import DEFAULT_RETENTION_S, Store
from netwatch.topology import DEFAULT_PATH, Topology, load_for_command
from netwatch.topology.units import format_duration, parse_duration

DEFAULT_LISTEN = "127.0.0.1:9471"
DEFAULT_DB = "/var/lib/netwatch/opscenter.sqlite3"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "opscenter",
        help="collect every town's state over MQTT; status page, JSON API, fleet metrics",
        description=(
            "The operations center: subscribe to every town's state, events, metrics and "
            "online topics (persistent session, QoS 1), keep the fleet's state and event "
            "history (SQLite), and serve the status page (/), the JSON API (/api/v1/, "
            "described at /openapi.json) and one Prometheus endpoint for the whole fleet "
            "(/metrics). Stop with SIGTERM."
        ),
    )
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument(
        "--mqtt",
        help="broker URL, mqtts://HOST:8883 with --ca/--cert/--key (the certificate's CN "
        "'opscenter' may read every town's topics) (default: the topology's opscenter.mqtt)",
    )
    parser.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT for HTTP (default: {DEFAULT_LISTEN})"
    )
    webconfig.add_argument(parser)
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"SQLite database, created on first start (default: {DEFAULT_DB})",
    )
    parser.add_argument(
        "--stale-after",
        type=_duration,
        default=DEFAULT_STALE_AFTER_S,
        help="a town silent this long shows as unknown "
        f"(default: {format_duration(DEFAULT_STALE_AFTER_S)})",
    )
    parser.add_argument(
        "--retention",
        type=_duration,
        default=DEFAULT_RETENTION_S,
        help=f"keep events this long (default: {format_duration(DEFAULT_RETENTION_S)})",
    )
    parser.add_argument(
        "--client-id",
        default=CLIENT_ID,
        help=f"MQTT client id of the persistent session (default: {CLIENT_ID}); "
        "two operations centers on one broker need two ids",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    mqtt_broker.add_arguments(parser)
    parser.set_defaults(run=run)


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--listen: expected HOST:PORT, got {text!r}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    topo = load_for_command(args.topology)
    mqtt = args.mqtt or str(topo.opscenter.mqtt)
    try:
        broker = mqtt_broker.from_arguments(mqtt, args)
    except BadBrokerUrl as exc:
        raise UserError(f"--mqtt: {exc}") from None
    host, port = _listen(args.listen)
    web = webconfig.load_option(args.web_config_file)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    store = Store(args.db, retention_s=args.retention)
    try:
        try:
            listener = socket.create_server((host, port), reuse_port=False)
            # Inherited by every accepted connection: without it a response
            # written in two parts waits out the client's delayed ACK (40 ms).
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise UserError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
        settings = Settings(
            mqtt=broker, host=host, port=listener.getsockname()[1], db=args.db,
            client_id=args.client_id, stale_after=args.stale_after, web=web,
        )  # fmt: skip
        with listener:
            asyncio.run(_serve(topo, settings, store, listener))
    finally:
        store.close()
    return 0


async def _serve(topo: Topology, settings: Settings, store: Store, listener: socket.socket) -> None:
    await Opscenter(topo, settings, store).run(listener)
