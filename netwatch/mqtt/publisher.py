"""Publish one town's agent to the operations center without ever waiting on MQTT.

::

    async with Publisher(town="nishiki", url="mqtt://10.200.0.20:1883",
                         spool_dir="/var/lib/netwatch/spool") as pub:
        pub.publish_event(event)      # on disk when it returns; delivered in order
        pub.publish_state(state)      # keeps only the latest; retained
        pub.publish_metrics(metrics)  # QoS 0; dropped while offline

The publish methods touch only memory and the spool.  One background task
(``netwatch-mqtt-<town>``) owns the connection and loops forever::

    connect (Last Will: online=false, retained, QoS 1)
      -> online=true (retained) -> latest state (retained)
      -> events from the spool, oldest first, each removed only after PUBACK
      -> wait for more work
    on any error: back off (capped, jittered, exponential) and connect again

What this relies on in aiomqtt 2.x (read in its source, 2.5.1, over paho 2.2):

- ``await Client.publish(qos=1)`` returns only once paho's ``on_publish``
  has fired, and paho fires it for QoS 1 only on PUBACK; so an event leaves
  the spool only after the broker took responsibility for it.
- That wait ends on PUBACK or after ``timeout``, *not* when the connection
  drops.  Each session therefore races the sender against a watcher that
  iterates ``client.messages``, which raises `MqttError` as soon as the
  connection is lost (we subscribe to nothing; it only ever raises).
- There is no automatic reconnection (paho's ``reconnect_on_failure`` is
  off).  Each attempt uses a new `Client`, so nothing in flight survives a
  connection inside paho: retransmission is the spool's job, and delivery
  is at least once (consumers de-duplicate on the event id).
- ``Client.__aenter__`` runs paho's blocking TCP connect in the default
  executor, bounded by paho's ``connect_timeout`` (which we set to
  ``timeout``), then waits up to ``timeout`` for CONNACK.  A thread cannot be
  cancelled, so stopping waits for a connect in progress rather than
  abandoning its socket.
- A clean DISCONNECT makes the broker discard the will, so a clean stop
  publishes online=false itself first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiomqtt

from netwatch.messages import (
    EventMessage,
    Kind,
    MessageError,
    MetricsMessage,
    OnlineMessage,
    StateMessage,
    topic,
)
from netwatch.mqtt.errors import BadBrokerUrl
from netwatch.mqtt.spool import Spool, SpooledMessage

log = logging.getLogger(__name__)

# A session shorter than this does not reset the backoff, so a broker that
# accepts and then drops us at once is not hammered.
_STABLE_AFTER_S = 5.0


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` -> ``(host, port)``; the port defaults to 1883."""
    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError:
        port = -1
    if parts.scheme != "mqtt" or not parts.hostname or parts.path not in ("", "/") or port < 1:
        raise BadBrokerUrl(f"expected a broker URL like mqtt://HOST:1883, got {url!r}")
    return parts.hostname, port


class Publisher:
    """One town's MQTT publisher; see the module docstring.

    Status attributes (read-only, for Prometheus): `connected`, `spooled`,
    `spool_dropped`, `published_events`, `connects`, `last_error` (the
    latest connection error, kept after reconnecting), and `events_lost`
    (the spool refused a write), `metrics_dropped` (offline).

    `timeout` bounds the TCP connect, CONNACK, each PUBACK and a clean stop.
    `keepalive` decides how fast a silent, half-open connection is noticed:
    by us after about 2 x keepalive (paho checks once a second); by the
    broker, which then publishes the will, after 1.5 x keepalive, though
    Mosquitto 2.0 only scans keepalives every 5-6 s.  A killed process
    closes its socket, and the will goes out at once.
    """

    def __init__(
        self,
        *,
        town: str,
        url: str,
        spool_dir: str | os.PathLike[str],
        client_id: str | None = None,
        keepalive: int = 5,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        timeout: float = 5.0,
        spool_max_messages: int = 10_000,
    ) -> None:
        self.town = town
        self.url = url
        self._host, self._port = parse_broker_url(url)
        self._online_topic = topic(town, Kind.ONLINE)  # also validates the town
        self._spool_dir = Path(spool_dir)
        self._spool_max = spool_max_messages
        # Unique by default: two publishers sharing an id would take each
        # other's session over and over.
        self.client_id = client_id or f"netwatch-{town}-{os.getpid()}-{random.getrandbits(24):06x}"
        self._keepalive = keepalive
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._timeout = timeout
        self._name = f"netwatch-mqtt-{town}"

        self._spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._state: bytes | None = None
        self._state_dirty = False
        self._metrics: bytes | None = None

        self._connected = False
        self.published_events = 0
        self.connects = 0
        self.last_error: str | None = None
        self.events_lost = 0
        self.metrics_dropped = 0

    # -- status -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def spooled(self) -> int:
        """Events on disk waiting for the broker."""
        return len(self._spool) if self._spool is not None else 0

    @property
    def spool_dropped(self) -> int:
        """Events dropped because the spool was full (persisted across runs)."""
        return self._spool.dropped if self._spool is not None else 0

    # -- caller API: never awaits the network ---------------------------------

    def publish_state(self, message: StateMessage) -> None:
        """Make `message` the town's retained state; only the latest is kept and
        it is republished on every (re)connect."""
        self._check(message)
        self._state = message.to_json()
        self._state_dirty = True
        self._wake.set()

    def publish_event(self, message: EventMessage) -> int | None:
        """Spool `message` (durable on return) for in-order QoS 1 delivery with
        its original timestamp.  Returns its spool sequence number, or None if
        the disk refused it (counted in `events_lost`, logged)."""
        self._check(message)
        assert self._spool is not None
        try:
            seq = self._spool.append(message.to_json())
        except OSError as exc:
            self.events_lost += 1
            self.last_error = f"spool write failed: {exc}"
            log.error("mqtt %s: event %s lost, %s", self.town, message.id, self.last_error)
            return None
        self._wake.set()
        return seq

    def publish_metrics(self, message: MetricsMessage) -> bool:
        """Send `message` at QoS 0 if connected (False, and dropped, if not)."""
        self._check(message)
        if not self._connected:
            self.metrics_dropped += 1
            return False
        self._metrics = message.to_json()
        self._wake.set()
        return True

    def _check(self, message: StateMessage | EventMessage | MetricsMessage) -> None:
        if self._task is None:
            raise RuntimeError("Publisher is not running: use `async with Publisher(...)`")
        if message.town != self.town:
            raise ValueError(f"message for town {message.town!r} given to {self.town!r}")

    def reconnect(self) -> None:
        """Drop the connection and connect again now, without backoff: call
        it after the routes moved (events in flight stay spooled)."""
        if self._connected:
            self._reconnect.set()

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("Publisher is already running")
        self._spool = Spool(self._spool_dir, max_messages=self._spool_max)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self._name)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop: say online=false and disconnect if connected; spooled events
        stay on disk for the next run.  Gives up (cancels) after `timeout`."""
        task, spool = self._task, self._spool
        if task is None or spool is None:
            return
        self._stop.set()
        self._wake.set()
        try:
            await asyncio.wait({task}, timeout=self._timeout)
        finally:
            if not task.done():
                log.warning("mqtt %s: stop took over %gs, abandoning", self.town, self._timeout)
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("mqtt %s: publisher task failed", self.town, exc_info=error)
            self._task = None
            self._connected = False
            spool.close()

    # -- the background task -------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        reported_down = False
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            client = self._new_client()
            up_since: float | None = None
            try:
                async with client:
                    up_since = loop.time()
                    self._on_connect()
                    reported_down = False
                    await self._serve(client)
                log.info("mqtt %s: disconnected cleanly from %s", self.town, self.url)
                return
            except _ReconnectRequested:
                # The route changed under an established session: its packets
                # now leave with the old path's source address and would only
                # time out.  A new connection takes the new path at once.
                self._reconnect.clear()
                log.info("mqtt %s: reconnecting over the new route", self.town)
                failures = 0
                continue
            except aiomqtt.MqttError as exc:
                error = _describe(exc)
            except Exception as exc:  # a bug must not end publishing for good
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # a traceback per new error, not per retry
                    log.exception("mqtt %s: unexpected error", self.town)
            finally:
                self._connected = False
                self._metrics = None
                _discard(client)
            self.last_error = error
            if up_since is not None:
                log.warning("mqtt %s: connection to %s lost: %s", self.town, self.url, error)
                if loop.time() - up_since >= _STABLE_AFTER_S:
                    failures = 0
            elif not reported_down:
                log.warning(
                    "mqtt %s: cannot reach %s: %s; retrying every %g-%gs",
                    self.town,
                    self.url,
                    error,
                    self._backoff_initial,
                    self._backoff_max,
                )
                reported_down = True
            else:
                log.debug("mqtt %s: still cannot reach %s: %s", self.town, self.url, error)
            await self._pause(self._backoff(failures))
            failures += 1

    def _new_client(self) -> aiomqtt.Client:
        will = OnlineMessage(town=self.town, online=False)
        client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.client_id,
            keepalive=self._keepalive,
            timeout=self._timeout,
            clean_session=True,
            will=aiomqtt.Will(self._online_topic, will.to_json(), qos=1, retain=True),
        )
        # paho's TCP connect timeout (5 s) is separate from aiomqtt's timeout.
        client._client.connect_timeout = self._timeout
        return client

    def _on_connect(self) -> None:
        self._connected = True
        self.connects += 1
        self._state_dirty = self._state is not None
        log.info("mqtt %s: connected to %s as %s", self.town, self.url, self.client_id)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._backoff_max, self._backoff_initial * 2.0 ** min(failures, 32))
        return ceiling * random.uniform(0.5, 1.0)  # jitter: towns must not reconnect in step

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Send until stopped (returns) or the connection fails (raises)."""
        sender = asyncio.create_task(self._send(client), name=f"{self._name}-send")
        watcher = asyncio.create_task(_watch(client), name=f"{self._name}-watch")
        kicked = asyncio.create_task(self._reconnect.wait(), name=f"{self._name}-kick")
        try:
            await asyncio.wait({sender, watcher, kicked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, watcher, kicked):
                task.cancel()
            await asyncio.gather(sender, watcher, kicked, return_exceptions=True)
        if not watcher.cancelled() and (lost := watcher.exception()) is not None:
            raise lost
        if kicked.done() and not kicked.cancelled():
            # Close the socket first: a polite DISCONNECT would wait on the
            # dead path (aiomqtt then forces the disconnection at once).
            _discard(client)
            raise _ReconnectRequested
        sender.result()

    async def _send(self, client: aiomqtt.Client) -> None:
        if not self._stop.is_set():
            await self._send_online(client, online=True)
        while not self._stop.is_set():
            # Events first: they are rare and ordered, while a state replaced
            # faster than the broker acknowledges it would never let them by.
            if item := self._next_event():
                await self._send_event(client, item)
            elif self._state_dirty:
                await self._send_state(client)
            elif (metrics := self._metrics) is not None:
                self._metrics = None
                await client.publish(topic(self.town, Kind.METRICS), metrics, qos=0)
            else:
                self._wake.clear()
                await self._wake.wait()
        if self._state_dirty:
            await self._send_state(client)
        await self._send_online(client, online=False)

    async def _send_online(self, client: aiomqtt.Client, *, online: bool) -> None:
        payload = OnlineMessage(town=self.town, online=online).to_json()
        await client.publish(self._online_topic, payload, qos=1, retain=True)

    async def _send_state(self, client: aiomqtt.Client) -> None:
        state = self._state
        assert state is not None
        await client.publish(topic(self.town, Kind.STATE), state, qos=1, retain=True)
        if self._state is state:  # not replaced while in flight
            self._state_dirty = False

    def _next_event(self) -> SpooledMessage | None:
        assert self._spool is not None
        items = self._spool.peek(1)
        return items[0] if items else None

    async def _send_event(self, client: aiomqtt.Client, item: SpooledMessage) -> None:
        assert self._spool is not None
        try:
            event = EventMessage.from_json(item.payload)
        except MessageError as exc:  # e.g. written by another schema version
            log.error("mqtt %s: discarding spooled message %d: %s", self.town, item.seq, exc)
            self._spool.ack(item.seq)
            return
        await client.publish(event.topic, item.payload, qos=1)
        self._spool.ack(item.seq)
        self.published_events += 1


class _ReconnectRequested(Exception):
    """Raised inside the connection loop by `Publisher.reconnect()`."""


async def _watch(client: aiomqtt.Client) -> None:
    """Raise `MqttError` when the connection is lost (see the module docstring)."""
    async for _ in client.messages:
        pass
    raise aiomqtt.MqttError("message iterator ended")


def _describe(exc: BaseException) -> str:
    # "Disconnected during message iteration" hides the reason in __cause__.
    cause = exc.__cause__
    text = str(cause if isinstance(cause, aiomqtt.MqttError | OSError) else exc)
    return text or type(exc).__name__


def _discard(client: aiomqtt.Client) -> None:
    # After a failed CONNACK wait or a failed clean disconnect, aiomqtt
    # leaves paho's socket open (paho would close it only at the next
    # keepalive check).  Close it now; a no-op when already closed.
    with contextlib.suppress(Exception):
        client._client._sock_close()
