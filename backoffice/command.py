"""`loadprobe target`: the command-line face of the reference application.

Importing this module must stay cheap (it is imported for every
`loadprobe` invocation, including `--help`): the server stack is imported
only when the command runs.
"""

from __future__ import annotations

import argparse
import os

from backoffice.auth import DEFAULT_PASSWORD, PASSWORD_ENV, lab_password
from backoffice.batch import DEFAULT_ROW_COST_US
from backoffice.config import (
    DEFAULT_PORT,
    DEFAULT_SESSION_TTL,
    TargetConfig,
    default_db_path,
)
from backoffice.towns import TOWNS
from loadprobe import CliError

_TOTAL = sum(t.population for t in TOWNS)
DESCRIPTION = f"""\
Serve the reference data-center application: a stand-in for the shared
municipal back-office of the four towns (synthetic data, lab use only).

The first start creates and seeds the ledger database ({_TOTAL:,} synthetic
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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _workers(text: str) -> int:
    if text not in {"1", "2", "3", "4"}:
        raise argparse.ArgumentTypeError(f"must be 1..4: {text!r}")
    return int(text)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "target",
        help="serve the reference data-center application",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from backoffice.server import ServeError, serve

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
    try:
        serve(config)
    except ServeError as exc:
        raise CliError(str(exc)) from exc
    return 0
