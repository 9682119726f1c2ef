"""`netwatch hold`: keep a town on one path for a while (maintenance).

Talks to the town's agent over its control socket (`netwatch.agent.control`);
the agent moves the traffic, keeps probing both paths, reports the hold in
its state, metrics and events, and ends it by itself when the time is up
or the held path fails.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import Any

from netwatch.agent import control
from netwatch.errors import EXIT_OK, UserError
from netwatch.messages import parse_ts
from netwatch.topology import DEFAULT_PATH, load_for_command
from netwatch.topology.units import format_duration, parse_duration

DESCRIPTION = """\
Hold a town on one path through its agent's control socket, release the hold,
or (with neither --path nor --release) show the agent's view: the path in use,
each path's state and the hold in force.

  netwatch hold --town nishiki --path backup --for 10m --reason "LGWAN router work"
  netwatch hold --town nishiki --release
  netwatch hold --town nishiki

A held agent moves the traffic to the path at once (if it is up), ignores the
failback hold-down and preference while the hold lasts, keeps probing every
path, and releases the hold by itself when the time is up or the held path
fails. The socket is /run/netwatch/agent-TOWN.sock, or the lab agent's; it
takes root or the agent's group.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hold",
        help="hold a town on one path for a while, release it, or show it",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--town", required=True, metavar="ID", help="town id, e.g. nishiki")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--path", metavar="NAME", help="the path to hold the town on")
    action.add_argument("--release", action="store_true", help="end the hold in force")
    parser.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        default="1h",
        help="how long the hold lasts, e.g. 10m, 2h (default: 1h)",
    )
    parser.add_argument("--reason", default="maintenance", help="why (shown everywhere)")
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument("--socket", metavar="PATH", help="the agent's control socket")
    parser.add_argument(
        "--lab-run-dir", metavar="DIR", help="the lab's run directory (default: lab.run_dir)"
    )
    parser.set_defaults(run=run)


def who() -> str:
    """user@host, for the hold's `by`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def run(args: argparse.Namespace) -> int:
    topo = load_for_command(args.topology)
    try:
        town = topo.town(args.town)
    except KeyError as exc:
        raise UserError(str(exc.args[0])) from None
    path = control.find_socket(topo, town.id, args.socket, lab_run_dir=args.lab_run_dir)
    if args.path is not None:
        if args.path not in {p.name for p in town.paths}:
            known = ", ".join(p.name for p in town.paths_by_preference)
            raise UserError(f"{town.id} has no path {args.path!r} (paths: {known})")
        try:
            seconds = parse_duration(args.duration)
        except ValueError as exc:
            raise UserError(f"--for: {exc}") from None
        if seconds <= 0:
            raise UserError("--for: a hold needs a positive duration")
        reply = control.request(
            path,
            {
                "cmd": "hold",
                "path": args.path,
                "seconds": seconds,
                "reason": args.reason,
                "by": who(),
            },
        )
        hold = reply["hold"]
        follow = "routes follow it" if reply.get("routes_follow") else "routes not moved yet"
        print(
            f"{town.id}: held on {hold['path']} until {_clock(hold['until'])} "
            f"({format_duration(seconds)}): {hold['reason']}; {follow}"
        )
        return EXIT_OK
    if args.release:
        reply = control.request(path, {"cmd": "release", "by": who()})
        ended = reply.get("released")
        if ended is None:
            print(f"{town.id}: no hold in force; traffic on {reply.get('active') or 'no path'}")
        else:
            print(f"{town.id}: hold on {ended['path']} released; traffic on {reply['active']}")
        return EXIT_OK
    print(describe(control.request(path, {"cmd": "show"})))
    return EXIT_OK


def describe(show: dict[str, Any]) -> str:
    """The agent's view, for people."""
    lines = [f"{show['town']}: traffic on {show.get('active') or 'no path'}"]
    for name, p in show["paths"].items():
        flags = " (damped)" if p.get("damped") else ""
        lines.append(f"  {name:8} {p['state']}{flags} since {_clock(p['since'])}")
    hold = show.get("hold")
    if hold:
        lines.append(
            f"  held on {hold['path']} until {_clock(hold['until'])} by {hold['by']}: "
            f"{hold['reason']}"
        )
    else:
        lines.append("  no hold")
    if show.get("all_down"):
        lines.append("  ALARM: every path is down")
    return "\n".join(lines)


def _clock(ts: str) -> str:
    return f"{parse_ts(ts):%Y-%m-%d %H:%M:%S} UTC"
