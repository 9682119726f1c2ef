"""The pipeline of a load test, the stages `loadprobe run` and `loadprobe compare`
share: options, checks of the input (`prepare`), route pinning (`on_path`),
the preflight, running (`plan`, `execute`), judging (`judge`) and reporting
(`conclude`).

Import cost matters (every `loadprobe` invocation imports the command
modules): only argparse and the standard library at module level here.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netwatch.constants import WEB_CONFIG_HELP, WEB_CONFIG_OPTION
from netwatch.errors import RouteError, UserError

if TYPE_CHECKING:
    from loadprobe.live import LiveMetrics
    from loadprobe.orchestrate import RunPlan, RunResult
    from loadprobe.preflight import Preflight
    from loadprobe.scenario import Scenario
    from loadprobe.verdict import Check, TxStats
    from netwatch.topology import Topology, Town, TownPath

EXIT_PASS, EXIT_FAIL, EXIT_INTERRUPTED = 0, 1, 130
DEFAULT_METRICS_PORT = 9472
HOLD_MARGIN_S = 300.0  # a hold outlives the planned run by this, then expires by itself


def _duration(text: str) -> float:
    from netwatch.topology.units import parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above zero: {text!r}")
    return value


def _count(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}: {value}")
        return value

    return parse


def _think(text: str) -> tuple[float, float]:
    from loadprobe.scenario import ScenarioError, parse_think_time

    try:
        return parse_think_time(text)
    except ScenarioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    """The parser of command `name` (run, compare), with the options both take."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(parser, compare=name == "compare")
    parser.set_defaults(handler=handler)
    return parser


def add_options(parser: argparse.ArgumentParser, *, compare: bool) -> None:
    """The options both commands take (run adds --path and --baseline)."""

    def whole(flag: str, low: int, high: int, metavar: str, help: str, **kw: Any) -> None:
        parser.add_argument(flag, type=_count(low, high), metavar=metavar, help=help, **kw)

    parser.add_argument("--town", required=True, metavar="ID", help="town id, e.g. nishiki")
    whole("--terminals", 1, 1000, "N", "simulated terminals (default: loadtest.terminals, 10)")
    parser.add_argument(
        "--duration",
        type=_duration,
        metavar="TIME",
        help="length of the load (e.g. 30s, 5m; default: loadtest.duration)"
        + ("; each path gets this" if compare else ""),
    )
    parser.add_argument(
        "--think-time",
        type=_think,
        metavar="MIN,MAX",
        help="think time between two transactions of a terminal, e.g. 2s,5s or 500ms "
        "(default: loadtest.think_time)",
    )
    parser.add_argument(
        "--host",
        metavar="URL",
        help="the system under test (default: loadtest.base_url, the data center's application)",
    )
    parser.add_argument(
        "--sla",
        action="append",
        default=[],
        metavar="TX.KEY=VALUE",
        help="override one threshold, e.g. logon.p95=500ms, batch.max_error_ratio=5%%, "
        "certificate.max_degradation=2.5 (repeatable)",
    )
    whole(
        "--workers",
        0,
        64,
        "N",
        "Locust worker processes on this machine (0: one process; N: a master and N workers)",
        default=0,
    )
    whole(
        "--remote-workers",
        0,
        1000,
        "N",
        "also wait for N workers started on other machines (see README)",
        default=0,
    )
    parser.add_argument(
        "--master-bind",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address the Locust master listens on for workers (%(default)s; 0.0.0.0 for "
        "remote workers)",
    )
    whole(
        "--master-port",
        1,
        65535,
        "PORT",
        "port of the Locust master (default: a free one; set it for remote workers)",
    )
    parser.add_argument(
        "--agent-socket",
        metavar="PATH",
        help="the town agent's control socket (default: found on this host or in the lab); "
        "with an agent, --path holds the town through it instead of touching routes",
    )
    parser.add_argument("--report-dir", metavar="DIR", help="where the reports go")
    parser.add_argument(
        "--topology", default="topology.yaml", metavar="FILE", help="topology (%(default)s)"
    )
    whole(
        "--metrics-port",
        0,
        65535,
        "PORT",
        "Prometheus endpoint during the run (%(default)s; 0 picks a free port)",
        default=DEFAULT_METRICS_PORT,
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address of the Prometheus endpoint (%(default)s: this host only)",
    )
    parser.add_argument("--no-metrics", action="store_true", help="no Prometheus endpoint")
    parser.add_argument(WEB_CONFIG_OPTION, metavar="PATH", help=WEB_CONFIG_HELP)
    parser.add_argument(
        "--metrics-hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep the endpoint up this long after the verdict, for a last scrape (0)",
    )
    parser.add_argument(
        "--lab-run-dir",
        metavar="DIR",
        help="the lab's run directory, where its Prometheus finds this run's endpoint "
        "(default: topology.yaml's lab.run_dir, as for `netwatch lab`)",
    )
    parser.add_argument(
        "--no-lab",
        action="store_true",
        help="run on this host even if the town's lab namespace (nw-TOWN) exists",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


@dataclass
class Context:
    args: argparse.Namespace
    topology_path: str
    topo: Topology
    town: Town
    scenario: Scenario
    password: str
    netns: str | None
    report_dir: Path
    metrics: LiveMetrics | None = None
    started: float = field(default_factory=time.time)


def prepare(args: argparse.Namespace, kind: str) -> Context:
    """Check every input before any load; a problem is a UserError (exit 2)."""
    from loadprobe import scenario as sc_mod
    from netwatch import webconfig
    from netwatch.emulator.netns import netns_exists
    from netwatch.topology import TopologyError, load

    web = webconfig.load_option(args.web_config_file)
    topology_path = str(Path(args.topology).resolve())
    try:
        topo = load(topology_path)
    except TopologyError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        raise UserError(f"{exc.problems[0]}{more}") from None
    try:
        scenario = sc_mod.from_topology(
            topo,
            args.town,
            topology_path=topology_path,
            base_url=args.host,
            terminals=args.terminals,
            duration=args.duration,
            think_time=args.think_time,
            sla_overrides=args.sla,
        )
        password = sc_mod.read_password(scenario)
    except sc_mod.ScenarioError as exc:
        raise UserError(str(exc)) from None
    town = topo.town(scenario.town)
    path_arg = getattr(args, "path", None)
    if path_arg is not None and path_arg not in {p.name for p in town.paths}:
        known = ", ".join(p.name for p in town.paths)
        raise UserError(f"town {town.id} has no path {path_arg!r} (known: {known})")
    netns = None if args.no_lab else f"nw-{town.id}"
    if netns is not None and not netns_exists(netns):
        netns = None
    if netns is not None and os.geteuid() != 0:
        raise UserError(f"the lab namespace {netns} exists, but entering it needs root")
    if kind == "compare" and netns is None:
        raise UserError(
            "compare pins the town's routes to each path in turn, which it does only in the "
            f"lab (namespace nw-{town.id} not found); elsewhere, run `loadprobe run --path "
            "primary`, switch paths, then `loadprobe run --path backup --baseline "
            "DIR/report.json`"
        )
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    report_dir = Path(args.report_dir or f"loadprobe-reports/{town.id}-{kind}-{stamp}")
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        probe = report_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write reports to {report_dir}: {exc.strerror or exc}") from None
    ctx = Context(args, topology_path, topo, town, scenario, password, netns, report_dir)
    if not args.no_metrics:
        from loadprobe.live import LiveMetrics
        from netwatch.emulator.netns import entered

        metrics = LiveMetrics(town.id)
        ops = _lab_ops_namespace(topo) if netns is not None else None
        try:
            # In the lab the endpoint lives in the operations center's
            # namespace, where the lab's Prometheus scrapes it.
            with entered(ops) if ops else contextlib.nullcontext():
                port = metrics.serve(args.metrics_host, args.metrics_port, web)
        except OSError as exc:
            raise UserError(
                f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
                f"{exc.strerror or exc} (choose --metrics-port, or --no-metrics)"
            ) from None
        ctx.metrics = metrics
        where = f" (in {ops})" if ops else ""
        url = f"{webconfig.scheme(web)}://{args.metrics_host}:{port}/metrics"
        _say(ctx, f"metrics: {url}{where}")
        if ops:
            run_dir = args.lab_run_dir or topo.lab.run_dir
            _register_with_lab_prometheus(run_dir, town.id, args.metrics_host, port)
    return ctx


def _lab_ops_namespace(topo: Topology) -> str | None:
    from netwatch.emulator.netns import netns_exists
    from netwatch.lab.plan import make_plan

    plan = make_plan(topo)
    ops = plan.nodes[plan.ops_node].netns
    return ops if netns_exists(ops) else None


def _register_with_lab_prometheus(run_dir: str, town: str, host: str, port: int) -> None:
    """A file_sd target file for the lab's Prometheus (if it runs: `netwatch
    lab up --agents`), removed at exit: it scrapes this run while it serves,
    whatever port it got."""
    from netwatch.lab.rundir import RunDir
    from netwatch.monitoring.files import targets

    run = RunDir.of(run_dir)
    if not run.prometheus.is_dir():
        return
    address = "127.0.0.1" if host in ("0.0.0.0", "") else host
    path = run.prometheus_target(f"loadprobe-{town}-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# loadprobe run of {town}, pid {os.getpid()}: removed when it exits\n"
        path.write_text(targets([f"{address}:{port}"], header=header), encoding="utf-8")
    except OSError as exc:  # the run goes on; only the lab's scrape is missing
        print(f"loadprobe: the lab's Prometheus will not scrape this run: {exc}", file=sys.stderr)
        return
    atexit.register(path.unlink, missing_ok=True)


def _say(ctx: Context, text: str) -> None:
    print(f"loadprobe: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def on_path(ctx: Context, path: TownPath | None) -> Iterator[None]:
    """Run the block with the town's traffic on `path`.

    While an agent runs in the town, only the agent changes its routes: the
    run asks it for a hold (released at the end, if it is still ours), so a
    failover during the run is the agent's to make and stays made.  With no
    agent, in the lab, the routes are pinned directly, and put back at the
    end only if nothing else changed them meanwhile.  Elsewhere, with no
    agent, the traffic must already take `path`."""
    from loadprobe import netpath

    if path is None:
        yield
        return
    socket_path = _agent_socket(ctx)
    if socket_path is not None:
        with _held(ctx, socket_path, path):
            yield
        return
    destination = _destination(ctx)
    if ctx.netns is None:
        try:
            found = netpath.lookup(destination, ctx.town)
        except RouteError as exc:
            raise UserError(str(exc)) from None
        if found.path != path.name:
            raise UserError(
                f"traffic to {destination} goes over {found.path or 'no town path'} "
                f"(dev {found.dev}), not {path.name}, and no agent runs here to hold it: "
                "outside the lab loadprobe does not change this host's routes"
            )
        yield
        return
    pinned = netpath.PinnedRoutes(ctx.netns, ctx.topo.routed_prefixes, path)
    try:
        pinned.pin()
    except RouteError as exc:
        pinned.restore()
        raise UserError(f"cannot pin {ctx.town.id}'s routes to {path.name}: {exc}") from None
    try:
        yield
    finally:
        for problem in pinned.restore():
            _say(ctx, f"WARNING: {problem}")


def _agent_socket(ctx: Context) -> Path | None:
    """The town agent's control socket, if an agent answers on it."""
    from netwatch.agent import control

    given = getattr(ctx.args, "agent_socket", None)
    lab_run_dir = getattr(ctx.args, "lab_run_dir", None)
    found = control.find_socket(ctx.topo, ctx.town.id, given, lab_run_dir=lab_run_dir)
    if control.agent_running(found):
        return found
    if given:
        raise UserError(f"--agent-socket {given}: no agent answers there")
    return None


@contextlib.contextmanager
def _held(ctx: Context, socket_path: Path, path: TownPath) -> Iterator[None]:
    """A hold of the agent for the run; if loadprobe dies, it expires on its own."""
    from netwatch.agent import control

    me = f"loadprobe:{os.getpid()}@{socket.gethostname()}"
    seconds = ctx.scenario.duration + HOLD_MARGIN_S
    try:
        reply = control.request(
            socket_path,
            {
                "cmd": "hold",
                "path": path.name,
                "seconds": seconds,
                "reason": f"loadprobe run on {path.name}",
                "by": me,
            },
        )
    except control.ControlError as exc:
        raise UserError(f"the {ctx.town.id} agent would not hold {path.name}: {exc}") from None
    if not reply.get("routes_follow"):
        _say(ctx, f"WARNING: the agent holds {path.name}, but the routes have not followed yet")
    _say(ctx, f"held on {path.name} by the {ctx.town.id} agent ({socket_path})")
    try:
        yield
    finally:
        try:
            reply = control.request(socket_path, {"cmd": "release", "by": me, "only_by": me})
        except control.ControlError as exc:
            _say(ctx, f"WARNING: could not release the hold ({exc}); it expires on its own")
        else:
            if reply.get("released") is None:
                _say(ctx, "the hold had already ended (the agent's decision stands)")


def _destination(ctx: Context) -> str:
    try:
        return socket.gethostbyname(ctx.scenario.target_host)
    except OSError as exc:
        raise UserError(f"cannot resolve {ctx.scenario.target_host}: {exc}") from None


def preflight(ctx: Context) -> Preflight:
    from loadprobe import preflight as pf

    try:
        return pf.check(ctx.scenario, ctx.password, ctx.netns)
    except pf.PreflightError as exc:
        raise UserError(str(exc)) from None


def plan(ctx: Context, label: str, path: str | None) -> RunPlan:
    from loadprobe.orchestrate import RunPlan

    args = ctx.args
    return RunPlan(
        label=label,
        scenario=ctx.scenario,
        town=ctx.town,
        netns=ctx.netns,
        requested_path=path,
        run_dir=ctx.report_dir / label,
        topology_path=ctx.topology_path,
        workers=args.workers,
        remote_workers=args.remote_workers,
        master_bind=args.master_bind,
        master_port=args.master_port,
    )


def execute(ctx: Context, run_plan: RunPlan) -> RunResult:
    from loadprobe.live import Progress
    from loadprobe.orchestrate import execute as run_locust

    where = f"in {ctx.netns}" if ctx.netns else "on this host"
    path = f" on the {run_plan.requested_path} path" if run_plan.requested_path else ""
    sc = ctx.scenario
    _say(
        ctx,
        f"{run_plan.label}: {sc.terminals} terminals of {ctx.town.id} for {sc.duration:g} s "
        f"against {sc.base_url}{path}, {where}",
    )
    progress = None if ctx.args.quiet else Progress(sc.sla, sc.duration)
    return run_locust(run_plan, metrics=ctx.metrics, progress=progress)


def judge(
    result: RunResult, stats: dict[str, TxStats], baseline: dict[str, TxStats] | None
) -> list[Check]:
    from loadprobe import verdict

    label = result.plan.label
    checks: list[Check] = []
    if result.plan.requested_path is not None:
        observed = [lk.path for lk in result.lookups]
        checks.append(verdict.check_path(label, result.plan.requested_path, observed))
    checks.append(verdict.check_complete(label, result.complete, result.interrupted, result.notes))
    checks.extend(verdict.evaluate(label, stats, result.plan.scenario.sla, baseline))
    return checks


def environment(ctx: Context, pre: Sequence[Preflight]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    from loadprobe import __version__

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    digest = hashlib.sha256(Path(ctx.topology_path).read_bytes()).hexdigest()
    health = next((p.health for p in pre if p.health), None) or {}
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadprobe": __version__,
        "locust": pkg("locust"),
        "command": " ".join(["loadprobe", *sys.argv[1:]]),
        "topology": ctx.topology_path,
        "topology_sha256": digest,
        "netns": ctx.netns,
        "target": ctx.scenario.base_url,
        "target_version": health.get("version"),
        "user_template": ctx.scenario.user_template,
        "password_from": ctx.scenario.password_source,
        "metrics_port": ctx.metrics.port if ctx.metrics else None,
    }


def town_dict(ctx: Context) -> dict[str, Any]:
    t = ctx.town
    return {"id": t.id, "name": t.name, "prefecture": t.prefecture, "population": t.population}


def conclude(
    ctx: Context,
    report: dict[str, Any],
    checks: Sequence[Check],
    results: Sequence[RunResult],
    factors: dict[str, float | None],
) -> int:
    """Write the reports, publish the verdict, print it; the exit code."""
    from loadprobe import report as report_mod
    from loadprobe import verdict

    paths = report_mod.write(report, ctx.report_dir)
    if ctx.metrics is not None:
        ctx.metrics.finish_run(checks, factors)
    for check in checks:
        if check.status == "fail":
            print(f"FAIL  {check.run}: {check.name}: {check.reason}")
    ok = verdict.passed(checks)
    failed = verdict.failed_transactions(checks)
    tail = "" if ok else f" (failed: {', '.join(failed)})"
    print(f"verdict: {'PASS' if ok else 'FAIL'}{tail}")
    print(f"report: {paths[1]}  ({paths[0].name}, {paths[2].name} beside it)")
    if ctx.metrics is not None and ctx.args.metrics_hold > 0:
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(ctx.args.metrics_hold)
    if any(r.interrupted for r in results):
        return EXIT_INTERRUPTED
    return EXIT_PASS if ok else EXIT_FAIL
