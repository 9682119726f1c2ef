"""The `loadprobe` command.

Each subcommand lives beside the code it drives and registers itself with
an `add_parser(subparsers)` function that sets `handler`: a function from
the parsed arguments to an exit code. To add a command (e.g. `run`,
`compare`), write its module and append its `add_parser` to COMMANDS.
`target` is the reference application, the `backoffice` package (also
`python -m backoffice`): only its registration is here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias

from backoffice import command as backoffice_command
from loadprobe import __version__
from loadprobe import compare as compare_command
from loadprobe import run as run_command
from netwatch.errors import UserError, run_handler

# A string: argparse._SubParsersAction is generic only to type checkers.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_target_parser(subparsers: SubParsers) -> None:
    """`loadprobe target`: the same options and behaviour as `python -m backoffice`."""
    parser = subparsers.add_parser(
        "target",
        help="serve the reference data-center application",
        description=backoffice_command.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backoffice_command.add_arguments(parser)
    parser.set_defaults(handler=_run_target)


def _run_target(args: argparse.Namespace) -> int:
    from backoffice.server import ServeError

    try:
        backoffice_command.serve_from_args(args, name="loadprobe target")
    except ServeError as exc:
        raise UserError(str(exc)) from exc
    return 0


COMMANDS: tuple[Callable[[SubParsers], None], ...] = (
    _add_target_parser,
    run_command.add_parser,
    compare_command.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadprobe",
        description="Degraded-mode load tests for the four towns' shared back-office, "
        "and the reference application they can run against.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return run_handler(f"loadprobe {args.command}: error", lambda: handler(args))


if __name__ == "__main__":
    sys.exit(main())
