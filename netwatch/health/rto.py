"""How long to wait for one probe: an RTT estimator in the manner of
RFC 6298 (TCP's retransmission timer), bounded by the policy.

A fixed timeout must cover the slowest path and probe kind (HTTP over the
ADSL backup takes ~70 ms), so on the LGWAN, where an echo takes ~12 ms, a
dead path would be noticed only after the full timeout.  Waiting about
twice the smoothed RTT, plus a slack for a busy machine's scheduling,
notices it sooner, while the floor (a third of the policy's timeout)
keeps jitter from counting as loss.

    rto = ProbeTimer(floor_s=0.05, cap_s=0.15, slack_s=0.02)
    rto.observe(0.012)       # each answered probe
    rto.timeout()            # -> seconds to wait for the next one
"""

from __future__ import annotations


class ProbeTimer:
    ALPHA = 1 / 8  # RFC 6298's gains
    BETA = 1 / 4

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

    def observe(self, rtt_s: float) -> None:
        if rtt_s < 0:
            raise ValueError(f"an RTT cannot be negative, got {rtt_s!r}")
        if self.srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
            return
        self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - rtt_s)
        self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * rtt_s

    def timeout(self) -> float:
        """Seconds to wait: the cap until an RTT is known, then
        srtt + max(4 * rttvar, srtt) + slack, kept within [floor, cap]."""
        if self.srtt is None:
            return self.cap_s
        wait = self.srtt + max(4 * self.rttvar, self.srtt) + self.slack_s
        return min(self.cap_s, max(self.floor_s, wait))
