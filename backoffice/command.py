"""The command line of the reference application: `python -m backoffice`.

`loadprobe target` is the same command: loadprobe.cli builds its parser with
`add_arguments` and `DESCRIPTION` and runs it through `serve_from_args`.
Both print a start-up failure (port in use, unwritable database path) as
one line, `<name>: error: <reason>`, and exit 2.

Importing this module must stay cheap (it is imported for every
`loadprobe` invocation, including `--help`): the server stack is imported
only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from backoffice.auth import DEFAULT_PASSWORD, PASSWORD_ENV, lab_password
from backoffice.batch import DEFAULT_ROW_COST_US
from backoffice.config import (
    DEFAULT_PORT,
    DEFAULT_SESSION_TTL,
    TargetConfig,
    default_db_path,
)
from backoffice.towns import TOTAL_POPULATION, TOWNS

PROG = "backoffice"
EXIT_USAGE = 2  # argparse's own exit code for bad arguments; used for every user mistake

DESCRIPTION = f"""\
Serve the reference data-center application: a stand-in for the shared
municipal back-office of the four towns (synthetic data, lab use only).

The first start creates and seeds the ledger database ({TOTAL_POPULATION:,} synthetic
residents, about a second); later starts reuse it. The HTTP API is described
at /openapi.json (interactive at /docs); /health and /metrics are for
operations. Stop with Ctrl-C or SIGTERM.

Users: ten terminals per town, <town>-t01 .. <town>-t10, towns
{", ".join(t.id for t in TOWNS)}. A session sees only its own town: other
towns' residents and batch jobs answer 404.
Password: ${PASSWORD_ENV}, default "{DEFAULT_PASSWORD}". Lab only: never
reuse it as a real credential.

Errors (port in use, unwritable database path) print one line and exit 2.
"""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0..65535: {value}")
    return value


def _number(rule: str, holds: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse type: a float for which `holds` is true (NaN never is), else `must be <rule>`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not holds(value):
            raise argparse.ArgumentTypeError(f"must be {rule}: {text}")
        return value

    return parse


_positive = _number("> 0", lambda value: value > 0)
_non_negative = _number(">= 0", lambda value: value >= 0)


def _workers(text: str) -> int:
    if text not in {"1", "2", "3", "4"}:
        raise argparse.ArgumentTypeError(f"must be 1..4: {text!r}")
    return int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the command, the same under both of its names."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="TCP port (%(default)s; 0 picks a free one, printed at start)",
    )
    parser.add_argument(
        "--db",
        type=os.path.expanduser,
        default=None,
        metavar="PATH",
        help=f"ledger database, created on first start (default: {default_db_path()}, "
        "i.e. $XDG_STATE_HOME/loadprobe/target.sqlite3)",
    )
    parser.add_argument(
        "--session-ttl",
        type=_positive,
        default=DEFAULT_SESSION_TTL,
        metavar="SECONDS",
        help="logon session lifetime (%(default).0f)",
    )
    parser.add_argument(
        "--batch-row-cost-us",
        type=_non_negative,
        default=DEFAULT_ROW_COST_US,
        metavar="MICROSECONDS",
        help="CPU time spent per resident row by the tax batch (%(default)s: the largest "
        "town, 16,905 rows, then takes about 2 s; 0 = only the tax arithmetic)",
    )
    parser.add_argument(
        "--batch-workers",
        type=_workers,
        default=1,
        metavar="N",
        help="processes running batch jobs, 1..4 (%(default)s; keep below the core count so "
        "requests stay fast while a batch runs)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="log every request (off: it costs throughput)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return parser


def serve_from_args(args: argparse.Namespace, *, name: str) -> None:
    """Serve with the parsed options until SIGINT/SIGTERM.

    Raises backoffice.server.ServeError (a one-line reason) if it cannot start.
    """
    from pathlib import Path

    from backoffice.server import serve

    config = TargetConfig(
        db_path=Path(args.db) if args.db else default_db_path(),
        host=args.host,
        port=args.port,
        session_ttl=args.session_ttl,
        password=lab_password(),
        batch_row_cost_us=args.batch_row_cost_us,
        batch_workers=args.batch_workers,
        access_log=args.access_log,
    )
    serve(config, name=name)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m backoffice`: 0 after a clean stop, 2 on bad input, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    from backoffice.server import ServeError

    try:
        serve_from_args(args, name=PROG)
    except ServeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0
