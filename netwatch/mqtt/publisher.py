"""Publish one town's agent to the operations center without ever waiting on MQTT.

::

    async with Publisher(town="nishiki", url="mqtt://10.200.0.20:1883",
                         spool_dir="/var/lib/netwatch/spool") as pub:
        pub.publish_event(event)      # returns at once; on disk soon; delivered in order
        pub.publish_state(state)      # keeps only the latest; retained
        pub.publish_metrics(metrics)  # QoS 0; dropped while offline

The publish methods touch only memory: none does I/O on the event loop,
which is also where the agent decides and moves routes.  Two workers do::

    writer thread (``netwatch-spool-<town>``): owns the `Spool`.  It stores
      events one at a time in the order given, each with its fsyncs, and
      removes delivered ones: a slow disk delays only this thread.
    background task (``netwatch-mqtt-<town>``): owns the connection.

Spool first, then send: the writer hands each event it has stored back to
the loop, which keeps a copy of what is on disk and not yet delivered (read
from the spool at start, so bounded by its size); the sender publishes from
that copy, in spool order, and tells the writer to remove an event once the
broker has it.  So the sender never publishes an event that is not on disk
yet, and never waits for the disk itself.  Stopping publishes online=false,
then waits for the writer to finish every job already given (however slow
the disk) before it closes the spool and ends the thread.

A thread needs the GIL between its system calls, and CPython hands it over
late to a main thread that makes short system calls non-stop (a loop that
spins without ever idling): there, storing an event can take far longer
than its fsyncs.  An agent's loop idles between rounds, so this stays rare.

The task loops forever::

    connect (Last Will: online=false, retained, QoS 1)
      -> online=true (retained) -> latest state (retained)
      -> events on disk, oldest first, each removed only after PUBACK
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
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar, cast

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
from netwatch.mqtt.broker import Broker, parse_broker
from netwatch.mqtt.spool import Spool, SpooledMessage

log = logging.getLogger(__name__)

# A session shorter than this does not reset the backoff, so a broker that
# accepts and then drops us at once is not hammered.
_STABLE_AFTER_S = 5.0

T = TypeVar("T")
# What the writer thread reports to the loop after a job: the value or the
# error, and the spool's (length, dropped) once the job is done.
_Done = Callable[[T | None, BaseException | None], None]


class Publisher:
    """One town's MQTT publisher; see the module docstring.

    Status attributes (read-only, for Prometheus): `connected`, `spooled`
    (on disk, waiting for the broker), `pending_writes` (given, not on disk
    yet), `spool_dropped`, `published_events`, `connects`, `last_error` (the
    latest connection or disk error, kept after recovery), and `events_lost`
    (the disk refused the write), `metrics_dropped` (offline).  They are
    updated on the event loop, so ``spooled + pending_writes`` counts every
    event given and neither delivered nor lost, exactly.

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
        url: str | Broker,
        spool_dir: str | os.PathLike[str],
        client_id: str | None = None,
        keepalive: int = 5,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        timeout: float = 5.0,
        spool_max_messages: int = 10_000,
    ) -> None:
        self.town = town
        self.broker = url if isinstance(url, Broker) else parse_broker(url)
        self.url = str(self.broker)  # what logs show: never a secret
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

        # The spool belongs to the writer thread: the loop never touches it
        # and sees it only through `_ready` (what is on disk, not delivered:
        # what the sender sends), `_spooled` and `_spool_dropped`.
        self._spool: Spool | None = None
        self._ready: deque[SpooledMessage] = deque()
        self._writer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._spooled = 0
        self._spool_dropped = 0
        self._pending_writes = 0
        self._disk_error: str | None = None  # the error being counted, not logged
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
        return self._spooled

    @property
    def pending_writes(self) -> int:
        """Events given to `publish_event` that the writer has not yet stored
        (nor failed to store)."""
        return self._pending_writes

    @property
    def spool_dropped(self) -> int:
        """Events dropped because the spool was full (persisted across runs)."""
        return self._spool_dropped

    # -- caller API: never awaits the network ---------------------------------

    def publish_state(self, message: StateMessage) -> None:
        """Make `message` the town's retained state; only the latest is kept and
        it is republished on every (re)connect."""
        self._check(message)
        self._state = message.to_json()
        self._state_dirty = True
        self._wake.set()

    def publish_event(self, message: EventMessage) -> asyncio.Future[int | None]:
        """Queue `message` for the spool and return at once: no disk I/O here.

        The writer thread stores events in the order given, whatever the
        loop is doing; the sender publishes each at QoS 1, in spool order and
        with its original timestamp, once it is on disk.  The future is done
        when the event is on disk, with its spool sequence number, or with
        None if the disk refused it (counted in `events_lost`; logged once
        per distinct error, with `last_error` set).  Awaiting it is optional
        and cancelling it cancels nothing.  Every event given before
        ``__aexit__`` is on disk when ``__aexit__`` returns."""
        self._check(message)
        payload, event_id = message.to_json(), message.id
        result: asyncio.Future[int | None] = self._running_loop().create_future()

        def stored(seq: int | None, error: BaseException | None) -> None:
            self._pending_writes -= 1
            if seq is not None:
                self._ready.append(SpooledMessage(seq, payload))
            if error is not None:
                self.events_lost += 1
                self._report_disk_error(f"event {event_id} lost", error)
            else:
                if self._disk_error is not None:
                    log.warning(
                        "mqtt %s: the spool takes events again (%d lost so far)",
                        self.town,
                        self.events_lost,
                    )
                    self._disk_error = None
                self._wake.set()
            if not result.done():
                result.set_result(seq)

        self._pending_writes += 1
        self._on_writer(partial(self._append, payload), stored)
        return result

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

    def _report_disk_error(self, what: str, error: BaseException) -> None:
        """Set `last_error`; log an error only when it differs from the one
        being counted (a dead disk would otherwise log every event)."""
        text = _describe_disk_error(error)
        self.last_error = f"spool: {text}"
        if text == self._disk_error:
            log.debug("mqtt %s: %s: %s", self.town, what, text)
            return
        self._disk_error = text
        log.error(
            "mqtt %s: %s: cannot write the spool %s: %s (more of the same are counted, not logged)",
            self.town,
            what,
            self._spool_dir,
            error,
            exc_info=None if isinstance(error, OSError) else error,
        )

    def reconnect(self) -> None:
        """Drop the connection and connect again now, without backoff: call
        it after the routes moved (events in flight stay spooled)."""
        if self._connected:
            self._reconnect.set()

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task is not None or self._writer is not None:
            raise RuntimeError("Publisher is already running")
        self._loop = asyncio.get_running_loop()
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"netwatch-spool-{self.town}")
        self._writer = writer
        try:
            self._ready = deque(await self._call_writer(self._open_spool))
        except BaseException:
            # Also when cancelled: the thread finishes the open, then closes.
            writer.submit(self._close_spool)
            writer.shutdown(wait=True)
            self._writer = None
            raise
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
        """Stop: say online=false and disconnect if connected (giving up, by
        cancelling, after `timeout`); then wait for every event given so far
        to be on disk, however long the disk takes.  Spooled events stay on
        disk for the next run."""
        task, writer = self._task, self._writer
        if task is None or writer is None:
            return
        self._stop.set()
        self._wake.set()
        try:
            try:
                await asyncio.wait({task}, timeout=self._timeout)
            finally:
                if not task.done():
                    log.warning("mqtt %s: stop took over %gs, abandoning", self.town, self._timeout)
                    task.cancel()
                    await asyncio.wait({task})
                if not task.cancelled() and (error := task.exception()) is not None:
                    log.error("mqtt %s: publisher task failed", self.town, exc_info=error)
        finally:
            self._task = None  # publish_* refuse from here: the close is the last job
            self._connected = False
            await self._stop_writer(writer)

    async def _stop_writer(self, writer: ThreadPoolExecutor) -> None:
        closed = self._call_writer(self._close_spool)
        try:
            while not (await asyncio.wait({closed}, timeout=self._timeout))[0]:
                log.warning(
                    "mqtt %s: still writing %d events to the spool", self.town, self._pending_writes
                )
        finally:
            # Normally the thread is idle by now.  If we were cancelled, block:
            # the events given must be on disk before we return.
            writer.shutdown(wait=True)
            self._writer = None
        if (error := closed.exception()) is not None:
            log.error("mqtt %s: closing the spool failed: %s", self.town, error)

    # -- the writer thread ---------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def _on_writer(self, job: Callable[[], T], done: _Done[T]) -> None:
        """Run `job` on the writer thread after every job given before it, then
        `done(value, error)` on the loop, with the spool's counts updated in
        the same callback."""
        loop, writer = self._running_loop(), self._writer
        assert writer is not None

        def run() -> None:
            value: T | None = None
            error: BaseException | None = None
            try:
                value = job()
            except BaseException as exc:  # handed to the loop; the thread goes on
                error = exc
            spool = self._spool
            counts = (len(spool), spool.dropped, spool.oldest) if spool is not None else None
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._job_done, done, value, error, counts)

        writer.submit(run)

    def _job_done(
        self,
        done: _Done[T],
        value: T | None,
        error: BaseException | None,
        counts: tuple[int, int, int | None] | None,
    ) -> None:
        if counts is not None:
            self._spooled, self._spool_dropped, oldest = counts
            # Dropped from a full spool: not to be sent any more.
            while self._ready and (oldest is None or self._ready[0].seq < oldest):
                self._ready.popleft()
        done(value, error)

    def _call_writer(self, job: Callable[[], T]) -> asyncio.Future[T]:
        """`job` on the writer thread, as a future; cancelling it cancels nothing."""
        future: asyncio.Future[T] = self._running_loop().create_future()

        def done(value: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(cast(T, value))

        self._on_writer(job, done)
        return future

    # These run on the writer thread, one at a time.

    def _open_spool(self) -> list[SpooledMessage]:
        self._spool = Spool(self._spool_dir, max_messages=self._spool_max)
        return self._spool.peek(len(self._spool))

    def _close_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()

    def _append(self, payload: bytes) -> int:
        assert self._spool is not None
        return self._spool.append(payload)

    def _ack(self, seq: int) -> None:
        assert self._spool is not None
        self._spool.ack(seq)

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
            **self.broker.client_options(),
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
            if self._ready:  # on disk already: an event being written is not here yet
                await self._send_event(client, self._ready[0])
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

    async def _send_event(self, client: aiomqtt.Client, item: SpooledMessage) -> None:
        try:
            event = EventMessage.from_json(item.payload)
        except MessageError as exc:  # e.g. written by another schema version
            log.error("mqtt %s: discarding spooled message %d: %s", self.town, item.seq, exc)
        else:
            await client.publish(event.topic, item.payload, qos=1)
            self.published_events += 1
        if self._ready and self._ready[0] is item:  # not dropped while in flight
            self._ready.popleft()

        def removed(_: None, error: BaseException | None) -> None:
            if error is not None:
                # Only its file may stay, so a restart would send it again
                # (at least once).  Not a reason to drop the session.
                self._report_disk_error(f"delivered message {item.seq} not removed", error)

        self._on_writer(partial(self._ack, item.seq), removed)


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


def _describe_disk_error(exc: BaseException) -> str:
    # Without the file name, which changes with every message.
    if isinstance(exc, OSError) and exc.strerror:
        return f"[Errno {exc.errno}] {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _discard(client: aiomqtt.Client) -> None:
    # After a failed CONNACK wait or a failed clean disconnect, aiomqtt
    # leaves paho's socket open (paho would close it only at the next
    # keepalive check).  Close it now; a no-op when already closed.
    with contextlib.suppress(Exception):
        client._client._sock_close()
