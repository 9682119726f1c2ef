"""TUN device creation (IFF_TUN | IFF_NO_PI): every read is one IP packet."""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


def open_tun(name: str) -> int:
    """Create a non-persistent TUN device ``name``; return its fd (non-blocking).

    Non-persistent means the kernel deletes the device, wherever it has been
    moved to, as soon as the fd is closed, including when the process dies.
    """
    if not 0 < len(name.encode()) < IFNAMSIZ:
        raise ValueError(f"bad interface name {name!r}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        ifreq = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifreq)
    except BaseException:
        os.close(fd)
        raise
    return fd
