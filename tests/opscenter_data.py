"""Messages of the MQTT contract, for the operations center's tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from netwatch import messages as m
from netwatch.health.state import PathState

T0 = datetime(2026, 12, 1, 5, 0, 0, tzinfo=UTC)


def state(
    town: str = "nishiki",
    active: str | None = "primary",
    *,
    at: datetime = T0,
    primary: PathState = PathState.UP,
    backup: PathState = PathState.UP,
    all_down: bool = False,
    hold: m.HoldStatus | None = None,
) -> m.StateMessage:
    return m.StateMessage(
        town=town,
        ts=at,
        active_path=active,
        all_down=all_down,
        route_backend="netlink",
        hold=hold,
        paths={
            "primary": m.PathStatus(
                state=primary, damped=False, since=at, loss_ratio=0.0, rtt_p50_s=0.012
            ),
            "backup": m.PathStatus(
                state=backup, damped=False, since=at, loss_ratio=0.01, rtt_p50_s=0.031
            ),
        },
    )


def event(
    kind: m.EventType = m.EventType.FAILOVER,
    town: str = "nishiki",
    *,
    at: datetime = T0,
    to: str = "backup",
    frm: str = "primary",
    duration: float | None = 0.12,
    details_kind: str = "failover",
    event_id: str | None = None,
) -> m.EventMessage:
    extra = {"id": event_id} if event_id else {}
    return m.EventMessage(
        town=town,
        ts=at,
        event=kind,
        reason=f"{frm} is down",
        from_path=frm,
        to_path=to,
        duration_s=duration,
        details={"kind": details_kind},
        **extra,
    )


def metrics(
    town: str = "nishiki",
    *,
    at: datetime = T0,
    rtt: float = 0.013,
    probes: dict[str, m.JSON] | None = None,
) -> m.MetricsMessage:
    return m.MetricsMessage(
        town=town,
        ts=at,
        probes=probes or {},
        paths={
            "primary": m.PathSummary(state=PathState.UP, loss_ratio=0.0, rtt_p50_s=rtt),
            "backup": m.PathSummary(state=PathState.UP, loss_ratio=0.02, rtt_p50_s=0.03),
        },
    )


def online(town: str = "nishiki", up: bool = True, *, at: datetime = T0) -> m.OnlineMessage:
    return m.OnlineMessage(town=town, online=up, ts=at)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def hold(
    path: str = "backup", *, at: datetime = T0, hours: float = 2.0, reason: str = "LGWAN works"
) -> m.HoldStatus:
    return m.HoldStatus(
        path=path, reason=reason, by="ops@oc", since=at, until=at + timedelta(hours=hours)
    )


def drill(
    status: m.DrillStatus = m.DrillStatus.PASSED,
    town: str = "nishiki",
    *,
    started: datetime = T0,
    at: datetime | None = None,
    drill_id: str | None = None,
    outage: float | None = 0.4,
    failback: float | None = 0.2,
) -> m.DrillMessage:
    """A drill's message: `at` (its ts) defaults to its end, 10 min after
    the start, or to the start while it runs."""
    running = status is m.DrillStatus.RUNNING
    failed = status in (m.DrillStatus.FAILED, m.DrillStatus.ABORTED)
    ended = None if running else started + timedelta(minutes=10)
    return m.DrillMessage(
        town=town,
        ts=at or ended or started,
        drill_id=drill_id or str(uuid.uuid4()),
        status=status,
        started=started,
        ended=ended,
        fault="lab",
        reason="outage 6 s > 5 s" if failed else "",
        outage_s=None if running else outage,
        failback_outage_s=None if running else failback,
        detection_s=None if running else 0.15,
        load_passed=None if running else status is m.DrillStatus.PASSED,
        report=None if running else "/var/lib/netwatch/drills/report.html",
    )
