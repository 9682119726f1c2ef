"""The control socket: JSON lines over a Unix stream socket, in the engine's epoll.

One request line gets one response line. Connections are non-blocking and
buffered so a slow or silent client never stalls the packet path.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import stat
from collections.abc import Callable
from typing import Any

MAX_LINE = 64 * 1024

Handler = Callable[[object], dict[str, Any]]


class ControlSocketInUse(Exception):
    """Another live process answers on the control socket path."""


def remove_stale(path: str) -> None:
    """Remove a left-over socket at ``path``; refuse a live one or a non-socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketInUse(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listening: stale, left by a killed emulator
        return
    finally:
        probe.close()
    raise ControlSocketInUse(f"{path} is in use by a running process")


class _Conn:
    __slots__ = ("inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()


class ControlServer:
    """Listening socket plus its connections, driven by the caller's epoll."""

    def __init__(self, path: str, epoll: select.epoll, handler: Handler) -> None:
        self.path = path
        self._epoll = epoll
        self._handler = handler
        self._conns: dict[int, _Conn] = {}
        self._listener: socket.socket | None = None
        self._inode = 0

    def open(self) -> None:
        """Create the socket, mode 0600, atomically at its final path.

        Binding a temporary name and renaming it means the path only ever
        appears as a socket that already listens: "exists and answers"
        is the readiness signal.
        """
        remove_stale(self.path)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.bind(tmp)
            os.chmod(tmp, 0o600)
            sock.listen(16)
            os.rename(tmp, self.path)
        except BaseException:
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._inode = os.stat(self.path).st_ino
        self._listener = sock
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def owns(self, fd: int) -> bool:
        return fd in self._conns or (self._listener is not None and fd == self._listener.fileno())

    def on_event(self, fd: int, mask: int) -> None:
        if self._listener is not None and fd == self._listener.fileno():
            self._accept()
            return
        conn = self._conns.get(fd)
        if conn is None:
            return
        if mask & select.EPOLLIN and not self._read(conn):
            self._flush(conn)  # answers to the last lines before the EOF
            self._drop(conn)
            return
        if mask & (select.EPOLLHUP | select.EPOLLERR) and not conn.outbuf:
            self._drop(conn)
            return
        self._flush(conn)

    def close(self) -> None:
        """Best-effort delivery of pending replies, then remove the socket."""
        for conn in list(self._conns.values()):
            if conn.outbuf:
                with contextlib.suppress(OSError):
                    conn.sock.settimeout(0.5)
                    conn.sock.sendall(conn.outbuf)
            self._drop(conn)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            # Unlink only our own socket, never a successor's at the same path.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the client sees a reset, the link keeps running
            sock.setblocking(False)
            self._conns[sock.fileno()] = _Conn(sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _read(self, conn: _Conn) -> bool:
        """Read and answer complete lines; False when the connection is done."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        conn.inbuf += data
        while (end := conn.inbuf.find(b"\n")) >= 0:
            line = bytes(conn.inbuf[:end])
            del conn.inbuf[: end + 1]
            if line.strip():
                conn.outbuf += self._answer(line)
        if len(conn.inbuf) > MAX_LINE:
            conn.outbuf += _encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            self._flush(conn)
            return False
        return True

    def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return _encode({"ok": False, "error": f"bad JSON: {exc}"})
        try:
            return _encode(self._handler(request))
        except Exception as exc:  # the emulator must survive any request
            return _encode({"ok": False, "error": f"internal error: {exc!r}"})

    def _flush(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(conn)
                return
        want = select.EPOLLIN | (select.EPOLLOUT if conn.outbuf else 0)
        with contextlib.suppress(FileNotFoundError, OSError):
            self._epoll.modify(fd, want)

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if self._conns.pop(fd, None) is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
        conn.sock.close()


def _encode(response: dict[str, Any]) -> bytes:
    return json.dumps(response, separators=(",", ":")).encode() + b"\n"
