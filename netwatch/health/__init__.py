"""The agent's decision core: pure, synchronous, fed by timestamps.

No clocks, sleeps, sockets or asyncio in here: the agent owns time and I/O
and calls in with monotonic seconds, so every decision can be replayed and
tested on simulated time (`simulate.Simulation`).

    probes (agent)          per path                            per town
    ─────────────           ─────────────────────────────       ───────────────────
    Sample(t, ok, rtt) ──►  SampleWindow(policy.window)
      one per kind,           loss, rtt p50/p95, jitter
      one round at a time         │
                                  ▼
    netlink carrier ─────►  PathHealth(name, policy)  ─────►  PathSelector(prefs,
      link_down / link_up     UNKNOWN/UP/DEGRADED/DOWN          holddown_s)
                              fall/rise, interval()             .decide(t, health)
                              Damping (RFC 2439)                    │
                                  │                                 ▼
                                  ▼                             Decision(old -> new,
                              Transition(old -> new,              failover/failback)
                                reason, suspected_at)             -> route backend

- `round(t, results)` returns the Transition it caused (events, metrics);
- `interval()` says when to start the next round (faster while suspect);
- `decide(t, health)` after each round or link event returns a Decision
  when the active path must change (routes), None otherwise.
"""

from netwatch.health.damping import Damping
from netwatch.health.path import PathHealth, PathSnapshot, PathState, Transition
from netwatch.health.selector import (
    Decision,
    DecisionKind,
    HealthView,
    Hold,
    HoldRefused,
    PathSelector,
)
from netwatch.health.window import Sample, SampleWindow, WindowStats

__all__ = [
    "Damping",
    "Decision",
    "DecisionKind",
    "HealthView",
    "Hold",
    "HoldRefused",
    "PathHealth",
    "PathSelector",
    "PathSnapshot",
    "PathState",
    "Sample",
    "SampleWindow",
    "Transition",
    "WindowStats",
]
