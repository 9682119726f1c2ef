"""`netwatch agent`: one per town, at the town's edge box."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from netwatch import webconfig
from netwatch.agent import control
from netwatch.agent.routes import CommandBackend, DryRunBackend, NetlinkBackend, RouteBackend
from netwatch.agent.runner import Agent, AgentSettings, EventSink
from netwatch.errors import UserError
from netwatch.mqtt import broker as mqtt_broker
from netwatch.mqtt.broker import Broker
from netwatch.topology import DEFAULT_PATH, Topology, Town, load_for_command

DEFAULT_METRICS = "127.0.0.1:9470"
DEFAULT_SPOOL = "/var/lib/netwatch/spool"
MCL_CURRENT, MCL_FUTURE = 1, 2  # <sys/mman.h>


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="probe a town's paths, fail over, publish metrics and state",
        description=(
            "Probe every path of one town towards the data center (ICMP, TCP, HTTP, each "
            "bound to its path by fwmark), decide UP/DEGRADED/DOWN with rise/fall, hold-down "
            "and flap damping, move the town's data-center routes to the best path, and "
            "publish Prometheus metrics and MQTT state/events. Stop with SIGTERM: routes "
            "stay as they are unless --withdraw-on-exit."
        ),
    )
    parser.add_argument("--town", required=True, help="town id from the topology, e.g. nishiki")
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument("--policy", help="policy profile (default: the topology's default)")
    parser.add_argument(
        "--route-backend",
        choices=("netlink", "command", "dry-run"),
        default="netlink",
        help="netlink: replace the routes here (default); command: run --route-command; "
        "dry-run: decide and report only",
    )
    parser.add_argument(
        "--route-command",
        help="for --route-backend command: a command line (no shell) that gets "
        "TOWN FROM TO REASON appended and NETWATCH_* in its environment",
    )
    parser.add_argument(
        "--metrics-listen",
        default=DEFAULT_METRICS,
        help=f"HOST:PORT for Prometheus, or 'off' (default: {DEFAULT_METRICS})",
    )
    webconfig.add_argument(parser)
    parser.add_argument(
        "--mqtt",
        help="broker URL, or 'off' (default: the topology's opscenter.mqtt); mqtts://HOST:8883 "
        "with --ca/--cert/--key, whose certificate's CN is the town id",
    )
    parser.add_argument(
        "--spool",
        help=f"directory for events waiting for the broker (default: {DEFAULT_SPOOL}/TOWN)",
    )
    parser.add_argument(
        "--withdraw-on-exit", action="store_true", help="remove netwatch's routes on SIGTERM"
    )
    parser.add_argument(
        "--control-socket",
        metavar="PATH",
        help="unix socket for `netwatch hold` and drills, or 'off' "
        f"(default: {control.DEFAULT_DIR}/agent-TOWN.sock, mode 0660)",
    )
    parser.add_argument(
        "--control-group",
        metavar="GROUP",
        help="the group that may use the control socket besides root (default: root's)",
    )
    parser.add_argument(
        "--realtime-priority",
        type=int,
        metavar="N",
        help="run under SCHED_RR at priority N (1-99), as keepalived's vrrp_rt_priority: "
        "probes and route changes keep their timing on a busy box (needs CAP_SYS_NICE)",
    )
    parser.add_argument(
        "--lock-memory",
        action="store_true",
        help="lock the agent's memory (mlockall), as keepalived's vrrp_no_swap: a failover "
        "never waits for pages to come back from swap (needs CAP_IPC_LOCK)",
    )
    parser.add_argument("--no-link-watch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    mqtt_broker.add_arguments(parser)
    parser.set_defaults(run=run)


def _listen(text: str) -> tuple[str, int] | None:
    if text == "off":
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--metrics-listen: expected HOST:PORT or 'off', got {text!r}")
    return host, int(port)


def _context(args: argparse.Namespace) -> tuple[Topology, Town]:
    topo = load_for_command(args.topology)
    try:
        town = topo.town(args.town)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    return topo, town


def _backend(args: argparse.Namespace, topo: Topology, town: Town) -> RouteBackend:
    if args.route_backend == "netlink":
        return NetlinkBackend(town, topo.routed_prefixes)
    if args.route_backend == "command":
        return CommandBackend(shlex.split(args.route_command or ""))
    return DryRunBackend()


def run(args: argparse.Namespace) -> int:
    topo, town = _context(args)
    policy_name = args.policy or topo.policy.default
    if policy_name not in topo.policy.profiles:
        known = ", ".join(topo.policy.profiles)
        raise UserError(f"unknown policy profile {policy_name!r} (profiles: {known})")
    listen = _listen(args.metrics_listen)
    web = webconfig.load_option(args.web_config_file)
    url = args.mqtt if args.mqtt is not None else topo.opscenter.mqtt
    mqtt = None if url == "off" else mqtt_broker.from_arguments(url, args)
    spool = Path(args.spool or f"{DEFAULT_SPOOL}/{town.id}")
    control_socket = (
        None
        if args.control_socket == "off"
        else (Path(args.control_socket) if args.control_socket else control.default_socket(town.id))
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s netwatch-agent[{town.id}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):  # one line per probe otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # aiomqtt warns when a reconnect after a route change skips the polite DISCONNECT.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    settings = AgentSettings(
        topo=topo,
        town=town,
        policy=topo.policy.profiles[policy_name],
        withdraw_on_exit=args.withdraw_on_exit,
        watch_links=not args.no_link_watch,
    )
    backend = _backend(args, topo, town)
    _schedule(args.realtime_priority, args.lock_memory)
    try:
        asyncio.run(
            _main(
                settings,
                backend,
                listen,
                mqtt,
                spool,
                control_socket,
                args.control_group,
                web=web,
            )
        )
    except PermissionError as exc:
        raise UserError(
            f"{exc.strerror or exc}: the agent needs root (raw sockets, routes)"
        ) from None
    return 0


def _schedule(priority: int | None, lock_memory: bool) -> None:
    """Real-time scheduling and locked memory, when asked for."""
    if priority is not None:
        if not 1 <= priority <= 99:
            raise UserError(f"--realtime-priority: expected 1-99, got {priority}")
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))
        except OSError as exc:
            raise UserError(
                f"--realtime-priority {priority}: {exc.strerror or exc} (needs CAP_SYS_NICE)"
            ) from None
    if lock_memory:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
            err = ctypes.get_errno()
            raise UserError(f"--lock-memory: {os.strerror(err)} (needs CAP_IPC_LOCK)")


async def _main(
    settings: AgentSettings,
    backend: RouteBackend,
    listen: tuple[str, int] | None,
    mqtt: Broker | None,
    spool: Path,
    control_socket: Path | None,
    control_group: str | None,
    *,
    web: webconfig.WebConfig | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        sink: EventSink | None = None
        if mqtt is not None:
            from netwatch.mqtt.publisher import Publisher

            try:
                await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"--spool {spool}: {exc.strerror or exc}") from None
            publisher = Publisher(town=settings.town.id, url=mqtt, spool_dir=spool)
            sink = await stack.enter_async_context(publisher)
        agent = Agent(settings, backend, sink)
        if listen is not None:
            try:
                webconfig.serve_metrics(agent.metrics.registry, listen[0], listen[1], web)
            except OSError as exc:
                raise UserError(
                    f"--metrics-listen {listen[0]}:{listen[1]}: {exc.strerror or exc}"
                ) from None
        if control_socket is not None:
            await stack.enter_async_context(
                control.ControlServer(agent, control_socket, group=control_group)
            )
        logging.getLogger("netwatch.agent").info(
            "started: %d paths, policy interval %gs, backend %s, mqtt %s",
            len(settings.town.paths),
            settings.policy.interval,
            backend.name,
            mqtt or "off",  # str(Broker): no secret
        )
        await agent.run(stop)
        logging.getLogger("netwatch.agent").info("stopped")
