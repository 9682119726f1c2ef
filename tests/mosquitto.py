"""A real Mosquitto on a free loopback port for tests, and a subscriber that
records what it sees.

    with running_mosquitto(tmp_path) as broker:   # or the `broker` fixture
        broker.url                                # mqtt://127.0.0.1:PORT
        broker.stop(); broker.start()             # same port; retained
                                                  # messages and sessions kept
        broker.kill()                             # SIGKILL, nothing saved

    async with recording(broker, "netwatch/v1/#") as rec:
        await rec.wait_for(lambda msgs: ..., what="the state")

To use the fixture, import it into the test module under its own name,
``from mosquitto import broker_fixture  # noqa: F401``, and ask for
``broker``.  The broker's config, persistence and log live in the given
directory (``broker.log_path``); a failure to start shows the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from netwatch.mqtt.broker import Broker as NetwatchBroker
from netwatch.mqtt.broker import parse_broker
from netwatch.mqtt.mosquitto import ACL, tls_listener
from netwatch.pki import OPSCENTER_CN

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Broker:
    """One Mosquitto, stoppable and restartable on the same port."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    pki: Path | None = None  # a `netwatch pki` directory: TLS and the fleet's ACL

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.pki else 'mqtt'}://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        """Start and wait until the port accepts connections."""
        if self.running:
            return
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            self._listener() + "user root\n"
            "persistence true\n"
            f"persistence_location {self.directory / 'data'}/\n"
            # Mosquitto's default, pinned: a test relies on a session's queue
            # being bounded while its client is away.
            "max_queued_messages 1000\n"
            f"log_dest file {self.log_path}\n"
            "log_type all\n"
            "connection_messages true\n"
            "log_timestamp_format %Y-%m-%dT%H:%M:%S\n"
        )
        with open(self.directory / "mosquitto.out", "ab") as out:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto not listening after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.01)

    def client(self, identity: str = OPSCENTER_CN) -> NetwatchBroker:
        """How `identity` connects (its certificate, with TLS)."""
        if self.pki is None:
            return parse_broker(self.url)
        return parse_broker(
            self.url,
            ca=self.pki / "ca.crt",
            cert=self.pki / f"{identity}.crt",
            key=self.pki / f"{identity}.key",
        )

    def _listener(self) -> str:
        if self.pki is None:
            return f"listener {self.port} {self.host}\nallow_anonymous true\n"
        acl = self.directory / "acl"
        acl.write_text(ACL, encoding="utf-8")
        return tls_listener(
            self.host,
            self.port,
            ca=str(self.pki / "ca.crt"),
            cert=str(self.pki / "broker.crt"),
            key=str(self.pki / "broker.key"),
            acl=str(acl),
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM: clients are disconnected, persistence is saved."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash; nothing since the last autosave is kept."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def log_tail(self, lines: int = 40) -> str:
        text = ""
        for path in (self.directory / "mosquitto.out", self.log_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_mosquitto(directory: Path, *, broker: Broker | None = None) -> Iterator[Broker]:
    """A started `Broker` keeping its files in `directory` (or `broker`,
    e.g. one with TLS); stopped on exit."""
    broker = broker or Broker(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(name="broker")
def broker_fixture(tmp_path: Path) -> Iterator[Broker]:
    with running_mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


# -- observing ----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Recorder:
    """Everything received on a subscription, in arrival order.

    It holds a persistent session (clean_session false, QoS 1) and
    reconnects by itself, so QoS 1 messages published while the broker
    restarts are not missed: the broker queues them for it.
    """

    def __init__(self, broker: Broker, topic_filter: str) -> None:
        self.broker = broker
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self.subscribed = asyncio.Event()
        self._client_id = f"recorder-{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self._in_session = False
        self._task = asyncio.create_task(self._collect(), name=self._client_id)

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(
        self,
        predicate: Callable[[list[Received]], bool],
        *,
        within: float = 5.0,
        what: str = "the expected messages",
    ) -> None:
        """Poll until `predicate(messages)` holds; AssertionError after `within` s."""
        deadline = asyncio.get_running_loop().time() + within
        while not predicate(self.messages):
            if asyncio.get_running_loop().time() > deadline:
                seen = "\n".join(f"  {m.topic} {m.payload[:120]!r}" for m in self.messages)
                raise AssertionError(f"no {what} within {within}s; received:\n{seen}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        # Cancel only inside a session: cancelling aiomqtt while its connect
        # runs in a thread would leave that thread's socket behind.
        self._stopping = True
        while not self._task.done():
            if self._in_session:
                self._task.cancel()
            await asyncio.wait({self._task}, timeout=0.01)

    async def _collect(self) -> None:
        while not self._stopping:
            try:
                async with aiomqtt.Client(
                    **self.broker.client().client_options(),
                    identifier=self._client_id,
                    clean_session=False,
                    timeout=2,
                ) as client:
                    self._in_session = True
                    try:
                        await client.subscribe(self.topic_filter, qos=1)
                        self.subscribed.set()
                        async for m in client.messages:
                            payload = m.payload if isinstance(m.payload, bytes) else b""
                            received = Received(m.topic.value, payload, m.qos, m.retain)
                            self.messages.append(received)
                    finally:
                        self._in_session = False
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def recording(
    broker: Broker, topic_filter: str = "#", *, within: float = 5.0
) -> AsyncIterator[Recorder]:
    """A `Recorder`, subscribed when this yields."""
    recorder = Recorder(broker, topic_filter)
    try:
        await asyncio.wait_for(recorder.subscribed.wait(), within)
        yield recorder
    finally:
        await recorder.close()
