"""What a drill or an acceptance campaign leaves behind: the journal.

Plain data, JSON-ready (`to_dict`), filled in step by step by the runner
(`netwatch.drill.runner`) and rendered by `netwatch.drill.report`.  Times
are epoch seconds (UTC); durations are seconds; None means "not measured"
(the drill stopped before it got there), never zero.

A drill's steps, in order::

    precheck  baseline  fault  measure  degraded  restore  failback  verdict

Each step that ran has a `Step`; a step that never started has none, so
the journal of an aborted drill shows where it stopped (`stopped_at`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from netwatch.messages import DrillStatus

__all__ = [
    "DRILL_STEPS",
    "EXIT",
    "AcceptanceRecord",
    "Check",
    "DrillRecord",
    "LoadSummary",
    "Mark",
    "ObserverSeries",
    "Step",
    "TownAcceptance",
]

DRILL_STEPS = (
    "precheck",
    "baseline",
    "fault",
    "measure",
    "degraded",
    "restore",
    "failback",
    "verdict",
)

# Exit codes of `netwatch drill` and `netwatch acceptance`.
EXIT = {
    DrillStatus.PASSED: 0,
    DrillStatus.FAILED: 1,
    DrillStatus.REFUSED: 2,  # bad input, or the precheck said no: nothing was touched
    DrillStatus.ABORTED: 3,  # a stop condition, an error, Ctrl-C or SIGTERM: rolled back
}

StepStatus = Literal["ok", "failed", "error", "aborted"]


@dataclass
class Step:
    name: str  # one of DRILL_STEPS (or "town:<id>" in a campaign)
    started: float
    ended: float | None = None
    status: StepStatus | None = None  # None while it runs
    detail: str = ""  # one line: what it found, or why it failed
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mark:
    """A moment on the timeline chart."""

    name: str  # fault, detection, route_change, restore, failback, abort
    at: float
    label: str


@dataclass
class ObserverSeries:
    """What the independent data-plane observer saw, binned for the chart.

    Bin i covers [t0 + i * bin_s, t0 + (i + 1) * bin_s); `rtt_p50_s` and
    `rtt_max_s` are None for a bin where nothing answered.  `gaps` are the
    spells longer than `gap_threshold_s` between two answered probes:
    (start, end) send times."""

    kind: str  # icmp | tcp
    target: str
    interval_s: float
    bin_s: float
    t0: float
    sent: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    rtt_p50_s: list[float | None] = field(default_factory=list)
    rtt_max_s: list[float | None] = field(default_factory=list)
    gap_threshold_s: float = 0.0
    gaps: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class LoadSummary:
    """One loadprobe run, as the drill or campaign read it from its report."""

    label: str  # baseline | degraded | primary | backup
    path: str | None  # the path the traffic took, from the report's route lookups
    report_dir: str
    exit_code: int | None = None
    passed: bool | None = None  # the SLA verdict; None: no verdict (it did not finish)
    transactions: int = 0
    failures: int = 0
    p95_s: dict[str, float | None] = field(default_factory=dict)  # by transaction
    degradation: dict[str, float | None] = field(default_factory=dict)  # p95 / baseline p95
    failed_checks: list[str] = field(default_factory=list)


@dataclass
class Check:
    """One line of the verdict: a measured figure against a threshold."""

    name: str  # outage, failback_outage, load_test, holddown
    limit: str
    value: str | None  # as measured, for people; None when not measured
    passed: bool | None  # None: not judged (no evidence is not a pass)
    detail: str = ""


@dataclass
class DrillRecord:
    drill_id: str
    town: str
    town_name: str
    fault: str  # lab | command | manual
    started: float
    ended: float | None = None
    status: DrillStatus = DrillStatus.RUNNING
    reason: str = ""  # why it failed, aborted or was refused
    stopped_at: str | None = None  # the step an abort or refusal happened in
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    observer: list[ObserverSeries] = field(default_factory=list)
    # outage_s, outage_icmp_s, outage_tcp_s, detection_s, route_change_s,
    # failback_s (restore -> traffic on the primary), failback_outage_s,
    # holddown_s (the policy's), primary_up_to_failback_s
    measurements: dict[str, float | None] = field(default_factory=dict)
    loads: list[LoadSummary] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the agent's, as it sent them
    report_dir: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT.get(self.status, 3)

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = 1
        data["kind"] = "drill"
        data["status"] = self.status.value
        data["exit_code"] = self.exit_code
        return data


@dataclass
class TownAcceptance:
    """One town of a campaign: a load test on the primary, then on the backup."""

    town: str
    town_name: str
    status: DrillStatus = DrillStatus.RUNNING  # passed, failed, aborted (an error); refused
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    loads: list[LoadSummary] = field(default_factory=list)
    skipped: bool = False  # passed in the report given to --resume: not run again


@dataclass
class AcceptanceRecord:
    campaign_id: str
    started: float
    ended: float | None = None
    status: DrillStatus = DrillStatus.RUNNING
    reason: str = ""
    towns: list[TownAcceptance] = field(default_factory=list)  # in cutover order
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    resumed_from: str | None = None
    report_dir: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT.get(self.status, 3)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = 1
        data["kind"] = "acceptance"
        data["status"] = self.status.value
        data["exit_code"] = self.exit_code
        for town in data["towns"]:
            town["status"] = str(town["status"])
        return data
