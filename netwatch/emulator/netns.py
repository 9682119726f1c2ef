"""Named network namespaces (``ip netns add``) from Python 3.11 (no os.setns)."""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int


def netns_path(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad network namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    try:
        return os.path.exists(netns_path(name))
    except ValueError:
        return False


def _setns_or_raise(fd: int, what: str) -> None:
    if _setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the calling thread inside netns ``name``.

    Sockets created inside keep that namespace after the block, which lets
    one process (a test, a benchmark) talk from several namespaces at once.
    Only the calling thread moves; the ``finally`` puts it back.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns_or_raise(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns_or_raise(home, "back home")
    finally:
        os.close(home)


def socket_in(
    name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
) -> socket.socket:
    """A new socket living in netns ``name``."""
    with entered(name):
        return socket.socket(family, kind)
