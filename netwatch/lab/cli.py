"""`netwatch lab`: the four-town network on one machine, for rehearsals and tests."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from netwatch.errors import EXIT_ERROR, EXIT_NOT_UP, LabError
from netwatch.lab import build, links, namespaces, services, status
from netwatch.lab.plan import make_plan
from netwatch.topology import DEFAULT_PATH, Topology, load_for_command
from netwatch.topology.units import parse_duration, parse_percentage, parse_rate

T = TypeVar("T")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = subparsers.add_parser(
        "lab",
        help="build and drive the emulated four-town network",
        description=(
            "Build the network of topology.yaml's lab section in network namespaces "
            "(nw-<node>), with every link emulated in user space (delay, jitter, loss, "
            "rate, cut; per direction). Needs root (CAP_NET_ADMIN)."
        ),
    )
    verbs = lab.add_subparsers(title="verbs", metavar="VERB")

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--topology", default=DEFAULT_PATH, help=f"topology file (default: {DEFAULT_PATH})"
        )
        parser.add_argument(
            "--run-dir",
            default=None,
            help="where the lab keeps its record, sockets and logs "
            "(default: lab.run_dir of the topology, /run/netwatch-lab)",
        )
        return parser

    p = verb("up", "build the lab (idempotent: a lab that is up is left as it is)")
    p.add_argument("--no-rtt", action="store_true", help="do not measure RTTs at the end")
    p.add_argument(
        "--agents",
        action="store_true",
        help="also run one netwatch agent per town inside its namespace, publishing to the "
        "lab's broker (logs in the run directory)",
    )
    p.add_argument("--policy", help="with --agents: the agents' policy profile")
    p.set_defaults(run=_up)

    p = verb("down", "remove every namespace, link and process of the lab")
    p.set_defaults(run=_down)

    p = verb("status", "nodes, addresses, links with profile and counters, processes")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--rtt", action="store_true", help="also measure each town's RTT per path")
    p.set_defaults(run=_status)

    for name, action in (("cut", "cut"), ("restore", "restore")):
        p = verb(name, f"{action} a town's path at once (both directions unless --direction)")
        _town_path(p)
        p.set_defaults(run=_cut if name == "cut" else _restore)

    for name, text in (("stop", "stop"), ("start", "start again")):
        p = verb(name, f"{text} one of the lab's services: target, broker or agent-TOWN")
        p.add_argument("service", help="target (the reference application), broker, agent-TOWN")
        p.set_defaults(run=_stop if name == "stop" else _start)

    p = verb("impair", "change a town path's profile while traffic flows")
    _town_path(p)
    p.add_argument("--delay", type=_arg(parse_duration), help="one-way delay, e.g. 40ms")
    p.add_argument("--jitter", type=_arg(parse_duration), help="jitter, e.g. 5ms")
    p.add_argument("--loss", type=_arg(parse_percentage), help="random loss, e.g. 2%%")
    p.add_argument("--rate", type=_arg(parse_rate), help="rate limit, e.g. 47mbit")
    p.add_argument("--queue", type=int, help="rate-limiter queue, packets")
    p.add_argument("--reset", action="store_true", help="back to topology.yaml's profile")
    p.set_defaults(run=_impair)

    lab.set_defaults(run=lambda args: _usage(lab))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_ERROR


def _town_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("town", help="town id, e.g. nishiki")
    parser.add_argument("path", help="path name, e.g. primary or backup")
    parser.add_argument(
        "--direction",
        choices=("up", "down", "both"),
        default="both",
        help="up: town to data center; down: the way back (default: both)",
    )


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Turn a unit parser into an argparse type: a bad value is a usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _context(args: argparse.Namespace) -> tuple[Topology, str]:
    topo = load_for_command(args.topology)
    return topo, args.run_dir or topo.lab.run_dir


def _up(args: argparse.Namespace) -> int:
    topo, run_dir = _context(args)
    started = time.monotonic()
    if args.policy and args.policy not in topo.policy.profiles:
        raise LabError(f"unknown policy profile {args.policy!r}")
    result = build.up(topo, args.topology, run_dir, agents=args.agents, policy=args.policy)
    if result.already_up and result.agents_started:
        print(f"lab is already up (run dir {run_dir}); started {result.agents_started} agents")
    elif result.already_up:
        print(f"lab is already up (run dir {run_dir}); nothing changed")
    else:
        spent = time.monotonic() - started
        print(
            f"lab is up in {spent:.1f} s: {len(result.state.namespaces)} namespaces, "
            f"{sum(1 for p in result.state.processes if p.name.startswith('emulator'))} "
            f"emulated links, reference application and Mosquitto running"
            f"{f', {result.agents_started} agents' if result.agents_started else ''} "
            f"(run dir {run_dir})"
        )
    if args.agents:
        url = services.opscenter_url(make_plan(topo))
        print(f"operations center: {url} (in nw-ops: ip netns exec nw-ops curl {url}api/v1/fleet)")
        prom = services.prometheus_url(topo)
        print(
            f"prometheus:        {prom} (in nw-ops: ip netns exec nw-ops curl {prom}api/v1/alerts)"
        )
    if not args.no_rtt:
        print("round-trip time to the data center (TCP connect), per town and path:")
        print(status.render_rtt(status.measure_rtt(topo)))
    return 0


def _down(args: argparse.Namespace) -> int:
    topo, run_dir = _context(args)
    removed = build.down(run_dir, topo)
    leftover = namespaces.lab_namespaces_present()
    print(f"lab is down: removed {len(removed)} items" if removed else "lab was not up")
    if leftover:
        print(f"note: other nw-* namespaces exist, not the lab's: {', '.join(leftover)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    topo, run_dir = _context(args)
    namespaces.require_root()
    report = status.collect(topo, run_dir)
    rtts = status.measure_rtt(topo) if args.rtt and report["up"] else None
    if rtts is not None:
        report["rtt"] = [dataclasses.asdict(r) for r in rtts]
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(status.render(report))
        if rtts is not None:
            print("round-trip time to the data center (TCP connect), per town and path:")
            print(status.render_rtt(rtts))
    return 0 if report["up"] else EXIT_NOT_UP


def _stop(args: argparse.Namespace) -> int:
    _, run_dir = _context(args)
    ran = services.stop_service(run_dir, args.service)
    print(f"stopped {args.service}" if ran else f"{args.service} was not running")
    return 0


def _start(args: argparse.Namespace) -> int:
    _, run_dir = _context(args)
    started = services.start_service(run_dir, args.service)
    print(f"started {args.service}" if started else f"{args.service} is already running")
    return 0


def _cut(args: argparse.Namespace) -> int:
    topo, run_dir = _context(args)
    links.cut(topo, run_dir, args.town, args.path, args.direction)
    print(f"cut {args.town}/{args.path} ({args.direction})")
    return 0


def _restore(args: argparse.Namespace) -> int:
    topo, run_dir = _context(args)
    links.restore(topo, run_dir, args.town, args.path, args.direction)
    print(f"restored {args.town}/{args.path} ({args.direction})")
    return 0


def _impair(args: argparse.Namespace) -> int:
    topo, run_dir = _context(args)
    change = links.Impairment(args.delay, args.jitter, args.loss, args.rate, args.queue)
    if args.reset:
        if change.fields():
            raise LabError("--reset takes no other change")
        links.reset(topo, run_dir, args.town, args.path)
        print(f"{args.town}/{args.path}: back to the topology's profile")
        return 0
    links.impair(topo, run_dir, args.town, args.path, args.direction, change)
    print(f"{args.town}/{args.path} ({args.direction}): {change.fields()}")
    return 0
