"""loadprobe's pieces that need no network: scenario, samples, checks, PDF
reading, reports, route helpers and the Locust command lines."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from loadprobe import checks, netpath, pdfcheck, samples, scenario, verdict
from loadprobe.orchestrate import RunPlan, RunResult, locust_commands
from loadprobe.report import build, html, junit, run_section, stats_from_dict
from loadprobe.report import write as write_report
from loadprobe.scenario import ScenarioError
from netwatch.topology import load

ROOT = Path(__file__).resolve().parents[1]
TOPO = load(ROOT / "topology.yaml")


def make_scenario(**overrides: Any) -> scenario.Scenario:
    return scenario.from_topology(
        TOPO, "nishiki", topology_path=ROOT / "topology.yaml", **overrides
    )


# --- the scenario -----------------------------------------------------------------------------


def test_scenario_comes_from_the_topology() -> None:
    sc = make_scenario()
    assert sc.town == "nishiki"
    assert sc.population == 11_407
    assert sc.base_url == "http://10.200.0.10:8080"
    assert sc.terminals == sc.accounts == 10
    assert sc.duration == 300
    assert (sc.think_min, sc.think_max) == (2.0, 5.0)
    assert sc.user(7) == "nishiki-t07"
    assert sc.sla["logon"].p95 == 1.0
    assert sc.sla["batch"].max_degradation == 2.0
    assert sc.batch_poll == 0.5
    assert (sc.target_host, sc.target_port) == ("10.200.0.10", 8080)
    assert sc.password_source == "environment variable LOADPROBE_PASSWORD"


def test_command_line_overrides() -> None:
    sc = make_scenario(
        base_url="http://127.0.0.1:9000/",
        terminals=3,
        duration=30,
        think_time=(0.1, 0.2),
        sla_overrides=[
            "logon.p95=250ms",
            "batch.max_error_ratio=5%",
            "certificate.max_degradation=2.5",
        ],
    )
    assert sc.base_url == "http://127.0.0.1:9000"
    assert (sc.terminals, sc.duration, sc.think_min, sc.think_max) == (3, 30, 0.1, 0.2)
    assert sc.sla["logon"].p95 == 0.25
    assert sc.sla["logon"].p99 == 2.0
    assert sc.sla["batch"].max_error_ratio == 0.05
    assert sc.sla["certificate"].max_degradation == 2.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("logon.p95", "TRANSACTION.KEY=VALUE"),
        ("logoff.p95=1s", "unknown transaction"),
        ("logon.p50=1s", "unknown key"),
        ("logon.p95=100", "unit"),
        ("logon.max_degradation=0.5", "out of range"),
    ],
)
def test_bad_sla_overrides_are_refused(override: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        make_scenario(sla_overrides=[override])


def test_unknown_town_and_bad_url_are_refused() -> None:
    with pytest.raises(ScenarioError, match="unknown town"):
        scenario.from_topology(TOPO, "tokyo")
    with pytest.raises(ScenarioError, match="URL"):
        make_scenario(base_url="ftp://x")


def test_think_time_parsing() -> None:
    assert scenario.parse_think_time("2s,5s") == (2.0, 5.0)
    assert scenario.parse_think_time("500ms") == (0.5, 0.5)
    with pytest.raises(ScenarioError, match="above"):
        scenario.parse_think_time("5s,1s")
    with pytest.raises(ScenarioError, match="unit"):
        scenario.parse_think_time("5")


def test_password_from_environment_or_file(tmp_path: Path) -> None:
    sc = make_scenario()
    assert scenario.read_password(sc, {"LOADPROBE_PASSWORD": "pw"}) == "pw"
    with pytest.raises(ScenarioError, match="LOADPROBE_PASSWORD"):
        scenario.read_password(sc, {})
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    sc_file = scenario.Scenario(**{**sc.__dict__, "password_file": str(secret)})
    assert scenario.read_password(sc_file, {}) == "from-file"
    assert "file" in sc_file.password_source
    secret.write_text("\n")
    with pytest.raises(ScenarioError, match="empty"):
        scenario.read_password(sc_file, {})


# --- the sample stream ------------------------------------------------------------------------


def test_sample_rows_round_trip() -> None:
    rows = [
        samples.tx_row(1000.5, "logon", 0.0123456, True, None, 3),
        samples.request_row(1000.5, "logon", "logon", 0.012, False, "HTTP 401: 認証"),
        samples.whole_row(1001.25, "certificate", "certificate", 0.5, True, None, 4),
        samples.users_row(1001.0, 10),
        samples.end_row(1002.0),
    ]
    decoded = [samples.decode(line) for line in samples.encode(rows).splitlines()]
    [tx], [req], [whole_req, whole_tx], [users], [end] = decoded
    assert isinstance(tx, samples.TxRecord)
    assert tx.transaction == "logon"
    assert tx.terminal == 3
    assert tx.sample == verdict.Sample(1000.5, 0.0123456, True, None)
    assert isinstance(req, samples.RequestRecord)
    assert req.sample.error == "HTTP 401: 認証"
    assert not req.sample.ok
    assert whole_req == samples.RequestRecord(
        "certificate", "certificate", verdict.Sample(1001.25, 0.5, True, None)
    )
    assert whole_tx == samples.TxRecord("certificate", 4, whole_req.sample)
    assert users == samples.UsersRecord(1001.0, 10)
    assert end == samples.EndRecord(1002.0)
    assert samples.decode("not json") == []
    assert samples.decode('["t", 1]') == []
    assert samples.decode('["x", 1]') == []


def test_reader_follows_a_growing_stream(tmp_path: Path) -> None:
    path = tmp_path / "samples.stream"
    reader = samples.SampleReader(path, keep=True)
    assert reader.read() == []  # not there yet
    with path.open("wb") as handle:
        samples.write_chunk(handle, [samples.users_row(1.0, 2)])
        samples.write_chunk(handle, [samples.request_row(2.0, "logon", "logon", 0.1, True, None)])
    data = path.read_bytes()
    cut = len(data) - 5
    path.write_bytes(data[:cut])  # the second chunk is still being written
    assert reader.read() == [samples.UsersRecord(1.0, 2)]
    path.write_bytes(data)
    [request] = reader.read()
    assert isinstance(request, samples.RequestRecord)
    assert reader.read() == []
    with path.open("ab") as handle:
        samples.write_chunk(handle, [("x", 1), samples.end_row(3.0)])
    assert reader.read() == [samples.EndRecord(3.0)]
    assert reader.skipped == 1
    assert len(reader.rows) == 3
    assert len(samples.read_all(path)) == 3
    assert samples.encode(reader.rows).count("\n") == 3


# --- content checks ---------------------------------------------------------------------------


def test_search_check() -> None:
    item = {"family_kana": "サトウ", "given_kana": "アイ"}
    assert checks.check_search({"total": 1, "items": [item]}, "サトウ") is None
    assert checks.check_search({"total": 1, "items": [item]}, "さとう") is None
    assert checks.check_search({"total": 1, "items": [item]}, "サトウア") is None
    assert "no resident" in (checks.check_search({"total": 0, "items": []}, "サトウ") or "")
    wrong = {"family_kana": "スズキ", "given_kana": "イチロウ"}
    assert "returned スズキ" in (
        checks.check_search({"total": 2, "items": [item, wrong]}, "サトウ") or ""
    )
    assert checks.check_search([], "サトウ") == "search answer has no items"


def test_record_check() -> None:
    who = checks.Resident("nishiki-0000006", "佐藤", "愛")
    record = {
        "resident_id": "nishiki-0000006",
        "family_name": "佐藤",
        "given_name": "愛",
        "town": "nishiki",
    }
    assert checks.check_record(record, who, "nishiki") is None
    assert "asked for" in (
        checks.check_record({**record, "given_name": "藍"}, who, "nishiki") or ""
    )
    assert "not nishiki" in (checks.check_record({**record, "town": "tsuno"}, who, "nishiki") or "")


def test_batch_result_check() -> None:
    assert checks.check_batch_result({"rows_processed": 11407, "taxpayers": 6000}, 11407) is None
    assert "11406 rows" in (
        checks.check_batch_result({"rows_processed": 11406, "taxpayers": 1}, 11407) or ""
    )
    assert "taxpayers" in (
        checks.check_batch_result({"rows_processed": 5, "taxpayers": 9}, 5) or ""
    )
    assert checks.check_health({"status": "ok"}) is None
    assert checks.check_health({"status": "error"}) == "health is error"


# --- certificates -----------------------------------------------------------------------------


def _certificate() -> bytes:
    from backoffice.certificate import render_juminhyo
    from backoffice.towns import TOWNS_BY_ID

    resident = {
        "resident_id": "tsuno-0000042",
        "family_name": "高橋",
        "given_name": "健(太)",  # parentheses must survive the PDF string escapes
        "family_kana": "タカハシ",
        "given_kana": "ケンタ",
        "birth_date": "1970-01-02",
        "registered_on": "1990-04-01",
        "sex": "M",
        "relationship": "世帯主",
        "household_id": "tsuno-H000010",
        "postal_code": "889-1201",
        "address": "宮崎県児湯郡都農町大字川北1番地",
    }
    return render_juminhyo(
        resident,
        [resident],
        town=TOWNS_BY_ID["tsuno"],
        certificate_number="tsuno-C0000007",
        issued_on=date(2012, 2, 20),
    )


def test_a_real_certificate_passes() -> None:
    pdf = _certificate()
    info = pdfcheck.read_info(pdf)
    assert info.title == "住民票の写し 高橋 健(太)"
    assert "tsuno-0000042" in info.subject
    assert info.pages == 1
    assert (
        pdfcheck.check_certificate(
            pdf,
            resident_id="tsuno-0000042",
            family_name="高橋",
            given_name="健(太)",
            number="tsuno-C0000007",
        )
        is None
    )


def test_a_certificate_of_someone_else_fails() -> None:
    pdf = _certificate()
    args = {"resident_id": "tsuno-0000042", "family_name": "高橋", "given_name": "健(太)"}
    assert "not '高橋 健'" in (
        pdfcheck.check_certificate(pdf, **{**args, "given_name": "健"}, number=None) or ""
    )
    assert "resident tsuno-0000043" in (
        pdfcheck.check_certificate(pdf, **{**args, "resident_id": "tsuno-0000043"}, number=None)
        or ""
    )
    assert "number" in (pdfcheck.check_certificate(pdf, **args, number="tsuno-C0000008") or "")


def test_broken_documents_are_refused() -> None:
    pdf = _certificate()

    def check(data: bytes) -> str:
        reason = pdfcheck.check_certificate(
            data, resident_id="x", family_name="y", given_name="z", number=None
        )
        return reason or ""

    assert check(b"<html>error</html>") == "not a PDF (no %PDF-1. header)"
    assert "truncated" in check(pdf[: len(pdf) // 2])
    assert "no document information" in check(pdf.replace(b"/Info", b"/Nope"))


def test_literal_strings_with_escapes() -> None:
    raw, end = pdfcheck.literal_string(rb"(a\(b\)c \101\\ (nested) \n)x", 0)
    assert raw == b"a(b)c A\\ (nested) \n"
    assert end == 28
    assert pdfcheck.text_string(b"\xfe\xff" + "高".encode("utf-16-be")) == "高"
    with pytest.raises(pdfcheck.PdfError):
        pdfcheck.literal_string(b"(open", 0)


# --- routes -----------------------------------------------------------------------------------


def test_path_of_a_route() -> None:
    town = TOPO.town("nishiki")
    assert netpath.path_of(town, "flets0", "172.20.1.1") == "backup"
    assert netpath.path_of(town, "lgwan0", None) == "primary"
    assert netpath.path_of(town, "eth0", "10.10.1.1") == "primary"  # by gateway
    assert netpath.path_of(town, "lo", None) is None


def test_route_arguments_recreate_a_route() -> None:
    route = {
        "dst": "10.200.0.0/24",
        "gateway": "10.10.1.1",
        "dev": "lgwan0",
        "protocol": "91",
        "scope": "global",
        "prefsrc": "10.10.1.2",
        "metric": 100,
        "flags": [],
    }
    args = netpath._route_args(route)
    assert args == [
        "10.200.0.0/24",
        "via",
        "10.10.1.1",
        "dev",
        "lgwan0",
        "proto",
        "91",
        "src",
        "10.10.1.2",
        "metric",
        "100",
    ]


class _FakeTable:
    """`ip` over an in-memory main table: replace, del and show."""

    def __init__(self, routes: list[dict[str, Any]]) -> None:
        self.routes = routes
        self.calls: list[list[str]] = []

    def ip(self, args: list[str], netns: str | None = None) -> str:
        assert netns == "nw-nishiki"
        self.calls.append(list(args))
        if args[:2] == ["-j", "route"]:
            return json.dumps(self.routes)
        if args[:2] in (["route", "replace"], ["route", "del"]):
            words = dict(zip(args[3::2], args[4::2], strict=False))
            self.routes = [r for r in self.routes if r["dst"] != args[2]]
            if args[1] == "replace":
                self.routes.append(
                    {
                        "dst": args[2],
                        "gateway": words.get("via"),
                        "dev": words.get("dev"),
                        "protocol": words.get("proto"),
                        "prefsrc": words.get("src"),
                    }
                )
        return ""


LGWAN_ROUTE = {
    "dst": "10.200.0.0/24",
    "gateway": "10.10.1.1",
    "dev": "lgwan0",
    "protocol": "91",
    "prefsrc": "10.10.1.2",
}


def test_pinned_routes_replace_then_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeTable([dict(LGWAN_ROUTE), {"dst": "default", "dev": "lo"}])
    monkeypatch.setattr(netpath, "run_ip", fake.ip)
    backup = TOPO.town("nishiki").path("backup")
    prefixes = [IPv4Network("10.200.0.0/24"), IPv4Network("10.210.0.0/24")]
    with netpath.PinnedRoutes("nw-nishiki", prefixes, backup) as pinned_routes:
        pinned = [c for c in fake.calls if c[:2] == ["route", "replace"]]
        assert pinned[0] == [
            "route", "replace", "10.200.0.0/24", "via", "172.20.1.1", "dev", "flets0",
            "proto", "91", "src", "172.20.1.2",
        ]  # fmt: skip
        assert len(pinned) == 2
        fake.calls.clear()
    # 10.200.0.0/24 existed: put back as it was; 10.210.0.0/24 did not: ours removed.
    changes = [c for c in fake.calls if c[0] == "route"]
    assert changes[0][:4] == ["route", "replace", "10.200.0.0/24", "via"]
    assert "lgwan0" in changes[0]
    assert changes[1][:3] == ["route", "del", "10.210.0.0/24"]
    assert len(changes) == 2
    assert pinned_routes.problems == []
    assert [r["dst"] for r in fake.routes] == ["default", "10.200.0.0/24"]


def test_pinned_routes_leave_a_route_changed_during_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Something else (an agent started meanwhile, an operator) moved the
    route: the saved one is stale, and putting it back would undo that."""
    fake = _FakeTable([dict(LGWAN_ROUTE)])
    monkeypatch.setattr(netpath, "run_ip", fake.ip)
    backup = TOPO.town("nishiki").path("backup")
    pinned = netpath.PinnedRoutes("nw-nishiki", [IPv4Network("10.200.0.0/24")], backup)
    with pinned:
        fake.routes = [{**LGWAN_ROUTE, "gateway": "10.10.1.9"}]  # changed under the run
        fake.calls.clear()
    assert not [c for c in fake.calls if c[0] == "route"]  # nothing written
    assert fake.routes == [{**LGWAN_ROUTE, "gateway": "10.10.1.9"}]
    assert pinned.problems == [
        "10.200.0.0/24: the route changed during the run (not by loadprobe): left as it is"
    ]


# --- Locust command lines ---------------------------------------------------------------------


def _plan(tmp_path: Path, **kw: Any) -> RunPlan:
    sc = make_scenario(think_time=(0.1, 0.3), duration=30)
    return RunPlan(
        label="backup",
        scenario=sc,
        town=TOPO.town("nishiki"),
        netns=kw.pop("netns", None),
        requested_path="backup",
        run_dir=tmp_path,
        topology_path=str(ROOT / "topology.yaml"),
        master_port=5599,
        **kw,
    )


def test_one_process_run(tmp_path: Path) -> None:
    commands = locust_commands(_plan(tmp_path), tmp_path / "s.jsonl")
    assert list(commands) == ["locust"]
    argv = commands["locust"]
    assert argv[:3] == [sys.executable, "-m", "locust"]
    text = " ".join(argv)
    assert "--headless --users 10 --spawn-rate 10 --run-time 30s" in text
    assert "--think-time 0.1s,0.3s" in text
    assert f"--samples-file {tmp_path / 's.jsonl'}" in text
    assert "password" not in text.lower()


def test_master_and_workers_in_a_namespace(tmp_path: Path) -> None:
    commands = locust_commands(
        _plan(tmp_path, netns="nw-nishiki", workers=2, remote_workers=1), tmp_path / "s.jsonl"
    )
    assert list(commands) == ["master", "worker-1", "worker-2"]
    for argv in commands.values():
        assert argv[:4] == ["ip", "netns", "exec", "nw-nishiki"]
        assert "--terminal-stride" in argv
        assert argv[argv.index("--terminal-stride") + 1] == "3"
    master = " ".join(commands["master"])
    assert (
        "--master --master-bind-host 127.0.0.1 --master-bind-port 5599 --expect-workers 3" in master
    )
    assert "--worker --master-host 127.0.0.1 --master-port 5599" in " ".join(commands["worker-1"])


# --- reports ----------------------------------------------------------------------------------


def _result(tmp_path: Path) -> RunResult:
    plan = _plan(tmp_path / "backup")
    result = RunResult(plan, started_at=1000.0, ended_at=1031.0, complete=True)
    for i in range(40):
        result.tx["logon"].append(verdict.Sample(1000 + i * 0.7, 0.02 + i / 1000, True))
        result.requests[("logon", "logon")].append(verdict.Sample(1000 + i * 0.7, 0.02, True))
    result.tx["batch"].append(verdict.Sample(1010, 3.0, False, "status: job failed"))
    result.terminals = [(1001.0, 10), (1031.0, 0)]
    result.lookups = [
        netpath.Lookup(1000.0, "10.200.0.10", "flets0", "172.20.1.1", "172.20.1.2", "backup"),
        netpath.Lookup(1031.0, "10.200.0.10", "flets0", "172.20.1.1", "172.20.1.2", "backup"),
    ]
    return result


def _report(tmp_path: Path) -> dict[str, Any]:
    result = _result(tmp_path)
    sla = result.plan.scenario.sla
    stats = verdict.summarize_all(result.tx, sla)
    checks = [
        verdict.check_path("backup", "backup", [lk.path for lk in result.lookups]),
        *verdict.evaluate("backup", stats, sla),
    ]
    return build(
        kind="run",
        town={"id": "nishiki", "name": "錦町"},
        runs=[run_section(result, stats, None)],
        checks=checks,
        limits=sla,
        degradation=None,
        baseline_source=None,
        environment={"host": "test"},
    )


def test_report_json_has_every_figure(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert report["verdict"] == "fail"
    assert report["exit_code"] == 1
    assert report["failed_transactions"] == ["app_start", "ledger_inquiry", "certificate", "batch"]
    run = report["runs"][0]
    assert run["path"]["requested"] == run["path"]["observed"] == "backup"
    assert run["path"]["consistent"] is True
    logon = run["transactions"]["logon"]
    assert logon["count"] == 40
    assert logon["p95_seconds"] == pytest.approx(0.057)  # rank 38 of 40: i = 37
    assert logon["distribution"][-1] == [0.059, 1.0]
    assert run["transactions"]["batch"]["errors"] == {"status: job failed": 1}
    assert run["requests"]["logon"]["count"] == 40
    assert report["sla"]["logon"]["p95_seconds"] == 1.0
    json.dumps(report)  # serialisable as it is
    again = stats_from_dict(logon)
    assert again.p95 == logon["p95_seconds"]
    assert again.count == 40


def test_junit_has_one_case_per_threshold(tmp_path: Path) -> None:
    report = _report(tmp_path)
    root = ET.fromstring(junit.render(report))
    cases = root.findall(".//testcase")
    assert len(cases) == len(report["thresholds"])
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == sum(1 for t in report["thresholds"] if t["status"] == "fail")
    assert root.get("failures") == str(len(failures))
    names = {c.get("name") for c in failures}
    assert "batch error ratio <= 1%" in names
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert len(skipped) == 5  # degradation, no baseline


def test_html_puts_the_verdict_first_and_draws_charts(tmp_path: Path) -> None:
    report = _report(tmp_path)
    page = html.render(report)
    assert page.index("FAIL") < page.index("<h2>Thresholds")
    assert page.count("<svg") == 2 * 5  # over time and distribution per transaction
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        report["runs"][0]["base_url"], ""
    )
    assert "status: job failed" in page
    paths = write_report(report, tmp_path / "out")
    assert [p.name for p in paths] == ["report.json", "report.html", "junit.xml"]
    assert all(p.stat().st_size > 0 for p in paths)


# --- process hygiene --------------------------------------------------------------------------


def test_the_command_imports_neither_locust_nor_gevent() -> None:
    code = (
        "import sys, loadprobe.cli, loadprobe.run, loadprobe.compare, loadprobe.pipeline, "
        "loadprobe.orchestrate, loadprobe.report.html, loadprobe.live, loadprobe.preflight; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_lists_run_and_compare() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadprobe.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "run" in done.stdout
    assert "compare" in done.stdout


def test_live_metrics_count_every_transaction_from_zero_at_the_start() -> None:
    from loadprobe.live import LiveMetrics
    from netwatch.topology import TRANSACTIONS

    live = LiveMetrics("nishiki")
    live.start_run("backup")
    for tx in TRANSACTIONS:
        labels = {"town": "nishiki", "path": "backup", "transaction": tx}
        for name in ("loadprobe_transactions_total", "loadprobe_transaction_failures_total"):
            assert live.registry.get_sample_value(name, labels) == 0.0, (name, tx)
