"""A CLOCK_MONOTONIC timerfd through ctypes (Python 3.11 has no os.timerfd_*).

``epoll.poll()`` rounds its timeout up to whole milliseconds; a timerfd in
the same epoll set wakes the loop at the exact release time of the next
held packet instead. ``time.monotonic()`` reads the same clock on Linux.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


_libc = ctypes.CDLL(None, use_errno=True)
_create = _libc.timerfd_create
_create.argtypes = (ctypes.c_int, ctypes.c_int)
_create.restype = ctypes.c_int
_settime = _libc.timerfd_settime
_settime.argtypes = (
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(_Itimerspec),
    ctypes.POINTER(_Itimerspec),
)
_settime.restype = ctypes.c_int


class TimerFd:
    """One-shot absolute timer on CLOCK_MONOTONIC, readable when it fires."""

    def __init__(self) -> None:
        fd = _create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        # Reused for every call: arming happens once per released packet.
        self._spec = _Itimerspec()
        self._ptr = ctypes.pointer(self._spec)
        #: The monotonic time the timer is armed for (0.0: not armed).
        self.armed_at = 0.0

    def arm(self, when: float) -> None:
        """Fire at monotonic time ``when`` (seconds); past times fire at once."""
        # Round up: firing a nanosecond early would find the packet not yet
        # due, and the loop would wait for an expiry that already happened.
        # (A zero value would disarm, hence at least 1 ns.)
        sec, nsec = divmod(max(1, math.ceil(when * 1e9)), 1_000_000_000)
        value = self._spec.it_value
        value.tv_sec = sec
        value.tv_nsec = nsec
        if _settime(self.fd, TFD_TIMER_ABSTIME, self._ptr, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.armed_at = when

    def clear(self) -> None:
        """Consume the expiry so a level-triggered epoll stops reporting it."""
        # Nothing to consume when it was re-armed after expiring.
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        self.armed_at = 0.0  # expired: any pending head needs a new arm

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
