"""`netwatch dashboards`: write (or check) the generated monitoring files."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path, PurePosixPath

from netwatch.errors import EXIT_FAIL, EXIT_OK, UserError
from netwatch.monitoring.files import dashboard_files, prometheus_files
from netwatch.topology import DEFAULT_PATH, load_for_command


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dashboards",
        help="generate the Grafana dashboards, Prometheus configuration and alert rules",
        description=(
            "Generate, from the topology, the Grafana dashboards with their provisioning "
            "(--out) and Prometheus's configuration, alert rules and target lists "
            "(--prometheus). With --check, write nothing: exit 1 and show the difference "
            "if a committed file is not what the topology generates."
        ),
    )
    parser.add_argument("--topology", default=DEFAULT_PATH, help=f"default: {DEFAULT_PATH}")
    parser.add_argument(
        "--out", default="dashboards", type=Path, help="dashboards directory (default: dashboards)"
    )
    parser.add_argument(
        "--prometheus",
        default="deploy/prometheus",
        type=Path,
        help="Prometheus directory (default: deploy/prometheus)",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the files on disk, write nothing"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import grafana_foundation_sdk  # noqa: F401
    except ImportError:
        raise UserError(
            "the dashboards are built with grafana-foundation-sdk, a development "
            "dependency: .venv/bin/pip install -e '.[dev]' (or ./scripts/setup)"
        ) from None
    topo = load_for_command(args.topology)
    wanted: dict[Path, str] = {}
    for base, files in (
        (args.out, dashboard_files(topo)),
        (args.prometheus, prometheus_files(topo)),
    ):
        wanted.update({base / Path(PurePosixPath(name)): text for name, text in files.items()})
    if args.check:
        return _check(wanted)
    for path, text in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    print(f"{len(wanted)} files up to date")
    return EXIT_OK


def _check(wanted: dict[Path, str]) -> int:
    stale = 0
    for path, text in wanted.items():
        have = path.read_text(encoding="utf-8") if path.exists() else ""
        if have != text:
            stale += 1
            diff = difflib.unified_diff(
                have.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{path} (on disk)",
                f"{path} (generated)",
                n=1,
            )
            sys.stdout.writelines(list(diff)[:40])
    if stale:
        print(f"{stale} of {len(wanted)} files differ: run `netwatch dashboards`", file=sys.stderr)
        return EXIT_FAIL
    print(f"{len(wanted)} files match the topology")
    return EXIT_OK
