"""How long to wait for one probe: an RTT estimator in the manner of
RFC 6298 (TCP's retransmission timer), bounded by the policy.

A fixed timeout must cover the slowest path and probe kind (HTTP over the
ADSL backup takes ~70 ms), so on the LGWAN, where an echo takes ~12 ms, a
dead path would be noticed only after the full timeout.  Waiting about
twice the smoothed RTT (srtt + max(4 * rttvar, srtt): a path whose RTT
doubles is slow, not lost), at least `floor_s`, plus a slack for a busy
machine's scheduling, notices it sooner.

A wait that expires doubles the next one (§5.5), up to the cap, and the
next answer sets it back to the estimate (§5.7): after a latency step the
deadline grows until the answers fit again, so a slower path is measured
as slower, not counted as lost.  A late answer (one that came after its
deadline) is a real RTT sample and is observed like any other.

    rto = ProbeTimer(floor_s=0.02, cap_s=0.25, slack_s=0.01)
    rto.observe(0.012)       # each answered probe (late ones too)
    rto.expired()            # each probe that timed out
    rto.timeout()            # -> seconds to wait for the next one
"""

from __future__ import annotations


class ProbeTimer:
    ALPHA = 1 / 8  # RFC 6298's gains
    BETA = 1 / 4
    K = 4

    __slots__ = ("backoff", "cap_s", "floor_s", "rttvar", "slack_s", "srtt")

    def __init__(self, floor_s: float, cap_s: float, slack_s: float = 0.0) -> None:
        if not 0 < floor_s <= cap_s:
            raise ValueError(f"need 0 < floor <= cap, got {floor_s!r}, {cap_s!r}")
        if slack_s < 0:
            raise ValueError(f"slack cannot be negative, got {slack_s!r}")
        self.floor_s = floor_s
        self.cap_s = cap_s
        self.slack_s = slack_s
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.backoff = 1  # doubled by each expiry, back to 1 on an answer

    def observe(self, rtt_s: float) -> None:
        if rtt_s < 0:
            raise ValueError(f"an RTT cannot be negative, got {rtt_s!r}")
        self.backoff = 1
        if self.srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
            return
        self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt_s)
        self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt_s

    def expired(self) -> None:
        """A probe waited its whole deadline: wait twice as long next time."""
        if self.estimate() * self.backoff < self.cap_s:
            self.backoff *= 2

    def estimate(self) -> float:
        """The wait before back-off: srtt + max(4 * rttvar, srtt) + slack, at
        least the floor; the cap until an RTT is known."""
        if self.srtt is None:
            return self.cap_s
        return max(self.floor_s, self.srtt + max(self.K * self.rttvar, self.srtt) + self.slack_s)

    def timeout(self) -> float:
        """Seconds to wait for the next probe, within [floor, cap]."""
        return min(self.cap_s, self.estimate() * self.backoff)
