"""Run the reference application: bind, seed or open the ledger, serve with uvicorn.

The socket is bound before the (possibly slow) first-start seeding, so a
port already in use fails at once, but it starts listening only once the
app is ready: until then clients get "connection refused", not a hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from backoffice.app import create_app
from backoffice.config import TargetConfig
from backoffice.ledger import LedgerError, open_ledger

KEEP_ALIVE_S = 75  # as nginx's default: longer than any think time


class ServeError(Exception):
    """The server cannot start; the message is one line for the user."""


def bind_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve host {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def exclusive_ledger(db_path: Path, *, name: str) -> Iterator[None]:
    """Hold `<db>.lock` while serving: one server per ledger.

    A starting server marks unfinished batch jobs as interrupted, which would
    be wrong if another live server still owned them.
    """
    lock_path = db_path.expanduser().with_name(db_path.name + ".lock")
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = lock_path.open("a")
    except OSError as exc:
        raise ServeError(f"{lock_path}: {exc.strerror or exc}") from exc
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServeError(f"{db_path}: in use by another {name} (lock {lock_path})") from None
        yield


def serve(config: TargetConfig, *, name: str) -> None:
    """Serve until SIGINT/SIGTERM. Raises ServeError on a startup failure.

    `name` is the command that started the server (`backoffice`, `loadprobe
    target`), the prefix of its start-up line.
    """
    with (
        contextlib.closing(bind_socket(config.host, config.port)) as sock,
        exclusive_ledger(config.db_path, name=name),
    ):
        try:
            info = open_ledger(config.db_path, config.seed)
        except LedgerError as exc:
            raise ServeError(str(exc)) from exc
        app = create_app(config, info)
        host, port = sock.getsockname()[:2]
        action = "seeded" if info.created else "opened"
        print(
            f"{name}: {action} {info.residents} residents in {info.path}; "
            f"serving http://{host}:{port} (OpenAPI at /openapi.json)",
            file=sys.stderr,
            flush=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="info",
                access_log=config.access_log,
                lifespan="on",
                timeout_graceful_shutdown=5,
                # Terminals think for seconds between requests; uvicorn's 5 s
                # default closes idle connections just as a request is sent
                # on them ("connection closed"), which no real server does.
                timeout_keep_alive=KEEP_ALIVE_S,
            )
        )
        server.run(sockets=[sock])
