"""The pure decision core of one link direction (netem + tbf semantics).

A :class:`Shaper` is fed ``(now, packet_size)`` and answers with a verdict:
either the time at which the packet leaves the link, or a :class:`Drop`
reason. It holds no packets, reads no clock and touches no socket, so every
rule is testable with made-up timestamps. The engine keeps the packets in a
FIFO next to the release times the shaper hands out.

Order of the stages, as with ``tbf`` feeding ``netem``:

1. ``cut``: drop everything.
2. random loss (seeded RNG).
3. rate: store-and-forward serialization at ``rate_bps`` of the IP packet
   length, behind a drop-tail queue of ``queue_limit()`` waiting packets.
4. delay: fixed one-way delay plus uniform jitter in [delay - jitter,
   delay + jitter], clamped at zero.

A packet is never released before the previous one of the same direction
(no reordering), so release times are monotonic and a deque suffices.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass
from enum import Enum

from netwatch.emulator.profile import Profile


class Drop(float, Enum):
    """Drop verdicts. Negative, so ``verdict < 0`` tests for any drop."""

    CUT = -1.0
    LOSS = -2.0
    QUEUE = -3.0


@dataclass(slots=True)
class Counters:
    """Per-direction counters; the engine adds the I/O ones."""

    packets_received: int = 0
    bytes_received: int = 0
    packets_passed: int = 0
    bytes_passed: int = 0
    dropped_cut: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    # Delay line full (engine-side memory guard, not a profile setting).
    dropped_overflow: int = 0
    # The far TUN refused the packet (device gone or kernel backlog full).
    dropped_write: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Shaper:
    """Verdicts for one direction. See the module docstring for the rules."""

    __slots__ = (
        "_busy_until",
        "_cut",
        "_delay",
        "_jitter",
        "_last_release",
        "_limit",
        "_loss",
        "_profile",
        "_rng",
        "_sec_per_byte",
        "_waiting",
        "counters",
    )

    def __init__(
        self,
        profile: Profile | None = None,
        *,
        rng: random.Random | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.counters = counters if counters is not None else Counters()
        self._rng = rng if rng is not None else random.Random()
        # Start times of packets queued behind the one being serialized.
        self._waiting: deque[float] = deque()
        self._busy_until = 0.0  # when the serializer finishes its last packet
        self._last_release = 0.0
        self._profile = Profile()
        self._cut = False
        self._loss = 0.0
        self._sec_per_byte = 0.0
        self._delay = 0.0
        self._jitter = 0.0
        self._limit = 0
        self.set_profile(profile if profile is not None else Profile())

    @property
    def profile(self) -> Profile:
        return self._profile

    def set_profile(self, profile: Profile) -> None:
        """Switch to ``profile`` for every packet offered from now on.

        Turning ``cut`` on forgets the rate and delay state: the engine
        discards the held packets (see :meth:`drop_held`), so nothing is
        queued any more and the link restarts empty when uncut.
        """
        if profile.cut and not self._profile.cut:
            self._reset_queue()
        if profile.rate_bps == 0:
            self._waiting.clear()  # no serializer, nobody waits for it
        self._profile = profile
        self._cut = profile.cut
        self._loss = profile.loss
        self._sec_per_byte = 8.0 / profile.rate_bps if profile.rate_bps else 0.0
        self._delay = profile.delay_s
        self._jitter = profile.jitter_s
        self._limit = profile.queue_limit()

    def drop_held(self, count: int) -> None:
        """Account for ``count`` held packets discarded by a cut."""
        self.counters.dropped_cut += count
        self._reset_queue()

    def waiting(self, now: float) -> int:
        """Packets waiting for the serializer at ``now`` (the rate queue)."""
        waiting = self._waiting
        while waiting and waiting[0] <= now:
            waiting.popleft()
        return len(waiting)

    def offer(self, now: float, size: int) -> float:
        """Verdict for a packet of ``size`` IP bytes arriving at ``now``.

        Returns the release time (>= now, monotonic across calls that pass)
        or a :class:`Drop` member (< 0), whose counter is then incremented.
        """
        if self._cut:
            self.counters.dropped_cut += 1
            return Drop.CUT
        if self._loss and self._rng.random() < self._loss:
            self.counters.dropped_loss += 1
            return Drop.LOSS
        release = now
        if self._sec_per_byte:
            start = self._busy_until
            if start > now:
                if self.waiting(now) >= self._limit:
                    self.counters.dropped_queue += 1
                    return Drop.QUEUE
                self._waiting.append(start)
            else:
                start = now
            release = self._busy_until = start + size * self._sec_per_byte
        if self._delay or self._jitter:
            delay = self._delay
            if self._jitter:
                delay += self._jitter * (2.0 * self._rng.random() - 1.0)
            if delay > 0.0:
                release += delay
        if release < self._last_release:
            release = self._last_release
        self._last_release = release
        return release

    def _reset_queue(self) -> None:
        self._waiting.clear()
        self._busy_until = 0.0
        self._last_release = 0.0
