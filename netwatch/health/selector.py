"""Which path carries the town's traffic.

The rule: the highest-preference path that is UP or DEGRADED and not
damped.  Around it:

- failover (the active path is DOWN) is immediate, to the best working path;
- failback (to a higher-preference path while the active one works) waits
  until that path has been working without a break for `holddown_s`;
- a damped path is used only when no undamped path works: damping must
  never blackhole a town;
- when no path works, the selector stays where it is (re-pointing routes at
  another dead path helps nobody) and raises `all_down`; whichever path
  comes back first is then taken at once;
- with `degraded_after` set, an active path DEGRADED that long moves the
  traffic to a less preferred path that is UP and clean (not DEGRADED),
  and failback then needs the preferred path clean (UP, not DEGRADED) for
  the hold-down, so a path hovering at the degraded line does not flap;
- at start, the first choice waits only for paths that could beat the best
  one working (a more preferred path still UNKNOWN, which its first round
  settles), so a restarting agent does not land on the backup and then sit
  out a whole hold-down before returning to the primary;
- a maintenance `Hold` (an operator, a load test, a drill) puts the traffic
  on its path at once, whatever the preference and the hold-down, and
  keeps it there: no failback, no switch.  It ends when its time is up or
  its path stops carrying traffic (`check_hold` says which), and the rules
  above take over again: a hold can never keep a town on a dead path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from netwatch.health.path import PathState
from netwatch.topology.units import format_duration

__all__ = ["Decision", "DecisionKind", "HealthView", "Hold", "HoldRefused", "PathSelector"]

DecisionKind = Literal["initial", "failover", "failback", "switch", "hold"]


class HealthView(Protocol):
    """What the selector reads of a path (`PathHealth` provides it)."""

    @property
    def state(self) -> PathState: ...

    @property
    def up_since(self) -> float | None: ...

    @property
    def clean_since(self) -> float | None: ...

    @property
    def since(self) -> float | None: ...

    @property
    def reason(self) -> str: ...

    def damped(self, t: float) -> bool: ...


@dataclass(frozen=True, slots=True)
class Decision:
    """Move the town's traffic from `old` (None at start) to `new`.

    kind: "initial" (first choice), "failover" (the active path is down),
    "failback" (back to a more preferred path after its hold-down),
    "switch" (off a working but damped path onto an undamped one),
    "hold" (onto the path of a maintenance hold)."""

    t: float
    old: str | None
    new: str
    reason: str
    kind: DecisionKind


@dataclass(frozen=True, slots=True)
class Hold:
    """Keep the traffic on `path` from `since` until `until` (monotonic
    seconds, like every time the selector reads), for `reason`, by `by`."""

    path: str
    since: float
    until: float
    reason: str
    by: str


class HoldRefused(ValueError):
    """A hold that cannot be placed (unknown path, or one that is not working)."""


def _duration(seconds: float) -> str:
    return format_duration(round(seconds, 3))


class PathSelector:
    def __init__(
        self,
        paths_by_preference: Sequence[str],
        holddown_s: float,
        *,
        degraded_after: float | None = None,
    ) -> None:
        names = tuple(paths_by_preference)
        if not names:
            raise ValueError("at least one path is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"path names repeat: {names}")
        if holddown_s < 0:
            raise ValueError(f"a hold-down cannot be negative, got {holddown_s!r}")
        self.paths = names
        self.holddown_s = holddown_s
        self.degraded_after = degraded_after
        self.active: str | None = None
        self.all_down = False  # alarm: no path works (not raised while all are UNKNOWN)
        self.all_down_since: float | None = None
        self.hold: Hold | None = None
        self._rank = {name: i for i, name in enumerate(names)}

    def place_hold(self, hold: Hold, health: Mapping[str, HealthView]) -> None:
        """Put a hold in force (replacing any other); `HoldRefused` if its
        path is unknown, not working, or the hold has no time left."""
        if hold.path not in self._rank:
            raise HoldRefused(f"no path {hold.path!r} (paths: {', '.join(self.paths)})")
        view = health[hold.path]
        if not view.state.carries_traffic:
            raise HoldRefused(f"{hold.path} is {view.state}: a hold needs a working path")
        if hold.until <= hold.since:
            raise HoldRefused("a hold needs a time to run")
        self.hold = hold

    def release_hold(self) -> Hold | None:
        """End the hold now; the hold that was in force, if any."""
        hold, self.hold = self.hold, None
        return hold

    def check_hold(self, t: float, health: Mapping[str, HealthView]) -> tuple[Hold, str] | None:
        """End a hold whose time is up or whose path stopped working: the
        hold and why it ended, or None while it stands (or there is none)."""
        hold = self.hold
        if hold is None:
            return None
        view = health[hold.path]
        if t >= hold.until:
            reason = f"expired after {_duration(hold.until - hold.since)}"
        elif view.state is not PathState.UNKNOWN and not view.state.carries_traffic:
            reason = f"{hold.path} is {view.state}: {view.reason}"
        else:
            return None
        self.hold = None
        return hold, reason

    def held(self, t: float, view: HealthView) -> bool:
        """Whether a path has worked without a break for the hold-down (and,
        with `degraded_after`, without being DEGRADED)."""
        since = view.up_since if self.degraded_after is None else view.clean_since
        return since is not None and t - since >= self.holddown_s

    def decide(self, t: float, health: Mapping[str, HealthView]) -> Decision | None:
        """Re-evaluate at `t`; a Decision when the active path changes."""
        views = [(name, health[name]) for name in self.paths]
        up = [name for name, view in views if view.state.carries_traffic]
        if not up:
            # The alarm needs every path judged DOWN: one still unprobed may work.
            unknown = any(view.state is PathState.UNKNOWN for _, view in views)
            if not unknown and not self.all_down:
                self.all_down, self.all_down_since = True, t
            return None
        self.all_down, self.all_down_since = False, None

        undamped = [name for name in up if not health[name].damped(t)]
        pool = undamped or up  # never blackhole: a damped path beats no path
        best = pool[0]
        note = "" if undamped else " (damped, but no undamped path is up)"
        active = self.active

        if active is None:
            waiting = any(
                health[name].state is PathState.UNKNOWN for name in self.paths[: self._rank[best]]
            )
            if waiting:
                return None  # a more preferred path has not had its first round
            return self._move(t, best, f"{best} is the best path up{note}", "initial")

        hold = self.hold
        if hold is not None and health[hold.path].state.carries_traffic:
            if active == hold.path:
                return None  # held: no failback, no switch
            return self._move(t, hold.path, f"held on {hold.path}: {hold.reason}", "hold")

        view = health[active]
        if view.state is PathState.UNKNOWN:
            return None  # adopted at start, not probed yet: unknown is not down
        if not view.state.carries_traffic:
            reason = f"{active} is {view.state}: {view.reason}; {best} is up{note}"
            return self._move(t, best, reason, "failover")

        rank = self._rank[active]
        for name in pool:
            if self._rank[name] >= rank:
                break
            if self.held(t, health[name]):
                view_since = health[name].up_since
                if self.degraded_after is not None:
                    view_since = health[name].clean_since
                since = view_since
                assert since is not None  # held() checked it
                reason = (
                    f"{name} up for {_duration(t - since)} "
                    f"(hold-down {_duration(self.holddown_s)}){note}"
                )
                return self._move(t, name, reason, "failback")

        if (
            self.degraded_after is not None
            and view.state is PathState.DEGRADED
            and view.since is not None
            and t - view.since >= self.degraded_after
        ):
            clean = [
                name for name in undamped if name != active and health[name].state is PathState.UP
            ]
            if clean:
                new = clean[0]
                reason = (
                    f"{active} degraded for {_duration(t - view.since)} "
                    f"(limit {_duration(self.degraded_after)}): {view.reason}; {new} is up"
                )
                return self._move(t, new, reason, "switch")

        if active not in pool:  # working but damped, while an undamped path works
            lower = [name for name in pool if self._rank[name] > rank]
            if lower:
                new = lower[0]
                reason = f"{active} is damped (flapping); {new} is up"
                return self._move(t, new, reason, "switch")
        return None

    def _move(self, t: float, new: str, reason: str, kind: DecisionKind) -> Decision:
        old, self.active = self.active, new
        return Decision(t, old, new, reason, kind)
