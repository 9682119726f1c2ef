"""The generated monitoring files: the committed ones are what topology.yaml
generates (`netwatch dashboards`), and every dashboard passes a lint in the
spirit of grafana/dashboard-linter's rules (that linter is not a dependency):
a fixed uid, a Prometheus datasource variable every query uses, a `town`
variable every query filters on, titled, described panels with units,
`$__rate_interval` in rates, unique ids and refIds, PromQL that promtool
parses, and value mappings with a text for every code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from netwatch.monitoring import DRILLS_UID, FLEET_UID, TOWN_UID
from netwatch.monitoring.files import dashboard_files, prometheus_files
from netwatch.topology import Topology, load

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "topology.yaml"
DASHBOARDS = ROOT / "dashboards"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD_FILES = sorted(DASHBOARDS.glob("*.json"))
REGENERATE = "run `netwatch dashboards`"

FIXED_UIDS = {FLEET_UID, TOWN_UID, DRILLS_UID}  # netwatch.monitoring: links depend on them
UID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}")  # what Grafana accepts as a uid
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TOWN_REFERENCE = re.compile(r"\$(?:town\b|\{town[}:])")
# What Grafana substitutes in a query, for promtool; longest names first.
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
GRAFANA_VARIABLE = re.compile(r"\$(?:\{\w+(?::\w+)?\}|\w+)")
RATE_CALL = re.compile(r"\b(rate|irate|increase)\s*\(")
RANGE_AT_END = re.compile(r"\[([^\[\]]*)\]\s*(?:(?:offset\s+-?\S+|@\s*\S+)\s*)*$")
MAPPED_PANELS = {"stat", "state-timeline"}

Panel = dict[str, Any]


# -- helpers -------------------------------------------------------------------


def _topology() -> Topology:
    return load(TOPOLOGY)


def _dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: not a JSON object"
    return data


def _all_panels(dashboard: dict[str, Any]) -> Iterator[Panel]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _panels(dashboard: dict[str, Any]) -> list[Panel]:
    """Every panel that is not a row."""
    return [p for p in _all_panels(dashboard) if p.get("type") != "row"]


def _name(panel: Panel) -> str:
    return f"panel {panel.get('id')} {panel.get('title')!r} ({panel.get('type')})"


def _annotations(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The query-backed annotations (not Grafana's built-in one)."""
    listed: list[dict[str, Any]] = dashboard.get("annotations", {}).get("list", [])
    return [a for a in listed if not a.get("builtIn")]


def _expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and annotation query."""
    out = [
        (f"{_name(p)} target {t.get('refId')}", str(t.get("expr", "")))
        for p in _panels(dashboard)
        for t in p.get("targets", [])
    ]
    out += [
        (f"annotation {a.get('name')!r}", str(a["expr"]))
        for a in _annotations(dashboard)
        if "expr" in a
    ]
    return out


def _call_argument(expr: str, open_paren: int) -> str:
    """The text between the parenthesis at `open_paren` and its match,
    skipping quoted label values."""
    depth, i, quote = 0, open_paren, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return expr[open_paren + 1 : i]
        i += 1
    raise AssertionError(f"unbalanced parentheses in {expr!r}")


def _rate_ranges(expr: str) -> list[tuple[str, str | None]]:
    """(function, range) of every rate, irate and increase call; None when
    the argument does not end in a range selector."""
    out: list[tuple[str, str | None]] = []
    for match in RATE_CALL.finditer(expr):
        argument = _call_argument(expr, match.end() - 1).strip()
        window = RANGE_AT_END.search(argument)
        out.append((match.group(1), window.group(1).strip() if window else None))
    return out


def _in_range_stat(panel: Panel, target: dict[str, Any]) -> bool:
    """A stat whose instant query reports a total over the dashboard's time range."""
    described = f"{panel.get('title', '')} {panel.get('description', '')}".lower()
    return panel.get("type") == "stat" and target.get("instant") is True and "range" in described


def _substitute(expr: str, town: str) -> str:
    """What Grafana sends Prometheus for `town`."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    expr = re.sub(r"\$\{town(?::\w+)?\}|\$town\b", town, expr)
    left = GRAFANA_VARIABLE.findall(expr)
    assert not left, f"unknown Grafana variables {left} in {expr!r}"
    return expr


def _on_disk(base: Path) -> set[PurePosixPath]:
    return {
        PurePosixPath(p.relative_to(base).as_posix())
        for p in base.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
    }


def _check(out: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`netwatch dashboards --check` on absolute paths, from elsewhere than the repository."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "netwatch.cli",
            "dashboards",
            "--check",
            "--topology",
            str(TOPOLOGY),
            "--out",
            str(out),
            "--prometheus",
            str(PROMETHEUS),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


# -- drift: the committed files are what the topology generates ----------------


@pytest.mark.parametrize(
    ("base", "generate"),
    [(DASHBOARDS, dashboard_files), (PROMETHEUS, prometheus_files)],
    ids=["dashboards", "deploy-prometheus"],
)
def test_committed_files_are_what_the_topology_generates(
    base: Path, generate: Callable[[Topology], dict[PurePosixPath, str]]
) -> None:
    wanted: dict[PurePosixPath, str] = generate(_topology())
    assert wanted
    missing = sorted(str(n) for n in wanted if not (base / Path(n)).is_file())
    assert not missing, f"not generated into {base}: {missing}; {REGENERATE}"
    stale = sorted(
        str(n) for n, text in wanted.items() if (base / Path(n)).read_text(encoding="utf-8") != text
    )
    assert not stale, f"differ from what topology.yaml generates: {stale}; {REGENERATE}"
    # The rules' unit tests beside them are hand-written (test_prometheus_rules.py).
    written = {n for n in _on_disk(base) if n.parts[0] == "tests"} if base == PROMETHEUS else set()
    stray = sorted(str(n) for n in _on_disk(base) - set(wanted) - written)
    assert not stray, f"in {base} but not generated (remove them or {REGENERATE}): {stray}"


def test_every_generated_dashboard_is_linted() -> None:
    generated = {n.name for n in dashboard_files(_topology()) if n.suffix == ".json"}
    assert generated
    assert {p.name for p in DASHBOARD_FILES} == generated, REGENERATE


def test_check_passes_on_the_committed_files(tmp_path: Path) -> None:
    result = _check(DASHBOARDS, tmp_path)
    assert result.returncode == 0, f"{REGENERATE}\n{result.stdout}\n{result.stderr}"
    assert "match the topology" in result.stdout


def test_check_names_a_modified_file_and_writes_nothing(tmp_path: Path) -> None:
    copy = tmp_path / "dashboards"
    shutil.copytree(DASHBOARDS, copy)
    edited = copy / DASHBOARD_FILES[0].name
    data = _dashboard(edited)
    data["title"] = f"{data['title']} (edited by hand)"
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    edited.write_text(text, encoding="utf-8")
    work = tmp_path / "cwd"
    work.mkdir()

    result = _check(copy, work)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert str(edited) in output
    for other in DASHBOARD_FILES[1:]:
        assert str(copy / other.name) not in output
    assert "1 of " in result.stderr
    assert REGENERATE in result.stderr
    assert edited.read_text(encoding="utf-8") == text  # --check writes nothing


# -- lint: every dashboard ------------------------------------------------------

dashboards = pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[p.name for p in DASHBOARD_FILES])


def test_there_are_dashboards() -> None:
    assert DASHBOARD_FILES, f"no dashboards in {DASHBOARDS}; {REGENERATE}"


@dashboards
def test_uid_is_fixed_and_unique(path: Path) -> None:
    uid = _dashboard(path).get("uid")
    assert isinstance(uid, str)
    assert uid, f"{path.name}: empty uid"
    assert UID_PATTERN.fullmatch(uid), f"{path.name}: uid {uid!r} is not a valid Grafana uid"
    assert uid in FIXED_UIDS, f"{path.name}: uid {uid!r} is not one of {sorted(FIXED_UIDS)}"
    others = [p.name for p in DASHBOARD_FILES if p != path and _dashboard(p).get("uid") == uid]
    assert not others, f"{path.name}: uid {uid!r} also in {others}"


@dashboards
def test_datasource_variable(path: Path) -> None:
    variables = _dashboard(path).get("templating", {}).get("list", [])
    found = [v for v in variables if v.get("name") == "datasource"]
    assert len(found) == 1, f"{path.name}: {len(found)} variables named datasource"
    assert found[0].get("type") == "datasource", f"{path.name}: datasource is not of that type"
    assert found[0].get("query") == "prometheus", f"{path.name}: datasource is not Prometheus"


@dashboards
def test_every_query_uses_the_datasource_variable(path: Path) -> None:
    dashboard = _dashboard(path)
    wrong = [
        f"{_name(p)}: {p.get('datasource')}"
        for p in _panels(dashboard)
        if p.get("datasource") != DATASOURCE
    ]
    wrong += [
        f"{_name(p)} target {t.get('refId')}: {t.get('datasource')}"
        for p in _panels(dashboard)
        for t in p.get("targets", [])
        if t.get("datasource") != DATASOURCE
    ]
    wrong += [
        f"annotation {a.get('name')!r}: {a.get('datasource')}"
        for a in _annotations(dashboard)
        if a.get("datasource") != DATASOURCE
    ]
    assert not wrong, f"{path.name}: not the datasource {DATASOURCE}: {wrong}"


@dashboards
def test_town_variable(path: Path) -> None:
    variables = _dashboard(path).get("templating", {}).get("list", [])
    assert [v for v in variables if v.get("name") == "town"], f"{path.name}: no town variable"


@dashboards
def test_every_panel_has_a_title_a_description_and_a_unit(path: Path) -> None:
    wrong = []
    for panel in _panels(_dashboard(path)):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        for what, value in (
            ("title", panel.get("title")),
            ("description", panel.get("description")),
            ("unit", unit),
        ):
            if not isinstance(value, str) or not value.strip():
                wrong.append(f"{_name(panel)}: no {what}")
    assert not wrong, f"{path.name}: {wrong}"


@dashboards
def test_rates_use_the_rate_interval(path: Path) -> None:
    dashboard = _dashboard(path)
    wrong = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            for function, window in _rate_ranges(str(target.get("expr", ""))):
                allowed = {"$__rate_interval"}
                if function == "increase" and _in_range_stat(panel, target):
                    allowed.add("$__range")
                if window not in allowed:
                    wrong.append(
                        f"{_name(panel)} target {target.get('refId')}: {function}() over "
                        f"[{window}], not {' or '.join(sorted(allowed))}"
                    )
    for annotation in _annotations(dashboard):
        for function, window in _rate_ranges(str(annotation.get("expr", ""))):
            if window != "$__rate_interval":
                wrong.append(
                    f"annotation {annotation.get('name')!r}: {function}() over [{window}], "
                    "not $__rate_interval"
                )
    assert not wrong, f"{path.name}: {wrong}"


@dashboards
def test_every_target_has_a_unique_ref_id(path: Path) -> None:
    wrong = []
    for panel in _panels(_dashboard(path)):
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if not refs:
            wrong.append(f"{_name(panel)}: no targets")
        if not all(isinstance(r, str) and r for r in refs):
            wrong.append(f"{_name(panel)}: a target without a refId: {refs}")
        if len(set(refs)) != len(refs):
            wrong.append(f"{_name(panel)}: refIds repeat: {refs}")
    assert not wrong, f"{path.name}: {wrong}"


@dashboards
def test_every_panel_query_filters_on_the_town(path: Path) -> None:
    wrong = [
        f"{_name(p)} target {t.get('refId')}: {t.get('expr')!r}"
        for p in _panels(_dashboard(path))
        for t in p.get("targets", [])
        if not TOWN_REFERENCE.search(str(t.get("expr", "")))
    ]
    assert not wrong, f"{path.name}: queries without $town: {wrong}"


@dashboards
def test_panel_ids_are_unique(path: Path) -> None:
    panels = list(_all_panels(_dashboard(path)))
    without = [_name(p) for p in panels if not isinstance(p.get("id"), int)]
    assert not without, f"{path.name}: panels without an id: {without}"
    ids: list[int] = [p["id"] for p in panels]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    assert not repeated, f"{path.name}: panel ids used more than once: {repeated}"


@dashboards
def test_queries_are_valid_promql(path: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Prometheus's command-line tool) is not installed: PromQL unchecked")
    town = _topology().towns[0].id
    expressions = _expressions(_dashboard(path))
    assert expressions, f"{path.name}: no queries"
    slug = re.sub(r"\W", "_", path.stem)
    rules = []
    origins = []
    for i, (where, expr) in enumerate(expressions):
        assert expr.strip(), f"{path.name}: {where}: empty query"
        record = f"dashboard_lint:{slug}:query_{i}"
        rules.append({"record": record, "expr": _substitute(expr, town)})
        origins.append(f"{record} = {where}")
    rules_file = tmp_path / f"{slug}.rules.yml"
    document = {"groups": [{"name": f"dashboard-lint-{slug}", "rules": rules}]}
    rules_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, (
        f"{path.name}: promtool rejects a query\n{result.stdout}\n{result.stderr}\n"
        + "\n".join(origins)
    )


@dashboards
def test_value_mappings_give_every_code_a_text(path: Path) -> None:
    wrong = []
    for panel in _panels(_dashboard(path)):
        if panel.get("type") not in MAPPED_PANELS:
            continue
        for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []):
            options = mapping.get("options", {})
            if mapping.get("type") == "value":
                results = {str(code): result for code, result in options.items()}
                if not results:
                    wrong.append(f"{_name(panel)}: a value mapping without codes")
            else:  # range, regex, special: one result
                results = {str(mapping.get("type")): options.get("result", {})}
            for code, result in results.items():
                text = result.get("text") if isinstance(result, dict) else None
                if not isinstance(text, str) or not text.strip():
                    wrong.append(f"{_name(panel)}: code {code} has no text")
    assert not wrong, f"{path.name}: {wrong}"
