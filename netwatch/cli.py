"""The `netwatch` command: one sub-command per module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from netwatch import check, hold, pki
from netwatch.agent import cli as agent_cli
from netwatch.drill import acceptance as acceptance_cli
from netwatch.drill import cli as drill_cli
from netwatch.errors import EXIT_ERROR, run_handler
from netwatch.lab import cli as lab_cli
from netwatch.monitoring import cli as monitoring_cli
from netwatch.opscenter import cli as opscenter_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netwatch",
        description=(
            "Network failover monitor for the four towns that share one municipal "
            "back-office: validate the topology, build the lab, run the agents, "
            "the operations center and failover drills."
        ),
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    check.add_parser(subparsers)
    lab_cli.add_parser(subparsers)
    agent_cli.add_parser(subparsers)
    hold.add_parser(subparsers)
    drill_cli.add_parser(subparsers)
    acceptance_cli.add_parser(subparsers)
    opscenter_cli.add_parser(subparsers)
    monitoring_cli.add_parser(subparsers)
    pki.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    command = " ".join(a for a in (argv or sys.argv[1:])[:2] if not a.startswith("-"))
    return run_handler(f"netwatch {command}", lambda: int(args.run(args)))


if __name__ == "__main__":
    sys.exit(main())
