"""User-space link emulator: one point-to-point link between two namespaces.

Like netem + tbf, but over TUN devices, for machines without sch_netem.
Run one process per link (``python -m netwatch.emulator run ...``) and
drive it with :class:`netwatch.emulator.control.EmulatorClient`.

Modules: ``profile`` (what a direction does), ``shaper`` (pure verdicts),
``engine`` (epoll loop), ``server`` / ``control`` (control socket, both
sides), ``ends`` / ``tun`` / ``netns`` / ``timerfd`` (kernel plumbing),
``harness`` (throw-away namespaces + emulator, for tests and benchmarks).
"""

from netwatch.emulator.control import (
    DirectionState,
    EmulatorClient,
    EmulatorError,
    EmulatorRejected,
    EmulatorUnavailable,
    LinkState,
)
from netwatch.emulator.profile import Profile, ProfileError

__all__ = [
    "DirectionState",
    "EmulatorClient",
    "EmulatorError",
    "EmulatorRejected",
    "EmulatorUnavailable",
    "LinkState",
    "Profile",
    "ProfileError",
]
