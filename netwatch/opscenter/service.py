"""The operations center's event loop: ingest from the broker, keep the
fleet and its history, serve HTTP.

Named tasks, one job each:

    opscenter-mqtt     subscribe (persistent session: events at QoS 1,
                       retained states at QoS 0); each message is checked,
                       applied and its rows queued as it arrives;
                       reconnects with capped, jittered back-off forever
    opscenter-flush    writes the queued rows every FLUSH_S
    opscenter-prune    deletes what is past its retention, hourly
    opscenter-http     uvicorn serving `web.create_app`

Nothing a town sends can stop the service: a bad message is counted and
dropped, a broken broker is retried while the page shows the last known
state as stale.  Only a database that cannot be opened at start is fatal
(`StoreError`, exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
import uvicorn

from netwatch import messages, webconfig
from netwatch.messages import Kind
from netwatch.mqtt.broker import Broker
from netwatch.opscenter import ingest
from netwatch.opscenter.fleet import DEFAULT_STALE_AFTER_S, Fleet
from netwatch.opscenter.metrics import ServiceMetrics
from netwatch.opscenter.store import FLUSH_S, Store
from netwatch.opscenter.web import Context, Link, create_app
from netwatch.throttle import LogThrottle
from netwatch.topology import Topology

log = logging.getLogger("netwatch.opscenter")

CLIENT_ID = "netwatch-opscenter"
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
PRUNE_EVERY_S = 3600.0
KEEPALIVE_S = 15
STOP_TIMEOUT_S = 5.0  # for the tasks to end after a stop; then the service exits anyway
# The QoS each leaf is taken at.  The session is persistent so that events
# sent while the service is away wait for it; the broker's queue for an
# absent session is bounded (Mosquitto: 1,000 messages), and a fleet's
# states, republished every few seconds, would fill it at once and push
# the events out.  States are retained, so the newest comes at every
# subscription anyway, and metrics summaries are published at QoS 0.
SUBSCRIBE_QOS = {Kind.STATE: 0, Kind.EVENT: 1, Kind.METRICS: 0, Kind.ONLINE: 1, Kind.DRILL: 1}


@dataclass(frozen=True)
class Settings:
    mqtt: Broker  # str() of it is what logs show: never a secret
    host: str
    port: int
    db: str
    client_id: str = CLIENT_ID
    stale_after: float = DEFAULT_STALE_AFTER_S
    max_payload: int = ingest.MAX_PAYLOAD_BYTES
    web: webconfig.WebConfig | None = None  # --web-config-file: TLS, basic auth


def _handled_on_arrival(
    handle: Callable[[aiomqtt.Message], None],
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's message queue (its `queue_type`) that hands each message to
    `handle` as paho decodes it instead of queueing it: no task and wait per
    message for the iterator (a tenth of the service's CPU at a national
    fleet's 1,900 messages a second).  `handle` never blocks."""

    class HandledOnArrival(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            handle(item)

    return HandledOnArrival


class Opscenter:
    def __init__(self, topo: Topology, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.fleet = Fleet(topo, stale_after=settings.stale_after)
        self.fleet.replay(store.history())
        self.store = store
        self.metrics = ServiceMetrics.create(self.fleet)
        self.link = Link()
        self._accepted = {kind: self.metrics.accepted.labels(kind.value) for kind in Kind}
        self.ctx = Context(self.fleet, store, self.metrics, self.link)
        self.towns = frozenset(self.fleet.towns)
        # The topology and the rebuilt fleet live as long as the process: out
        # of the collector's sight, a national fleet's hundreds of thousands
        # of objects are not walked again at every full collection.
        gc.freeze()
        self._throttle = LogThrottle(log, time.monotonic, period_s=60.0)
        self._stop = asyncio.Event()

    # -- ingest --------------------------------------------------------------

    def handle(
        self, topic: str, payload: bytes, received: float, *, retained: bool = False
    ) -> bool:
        """One message from the broker; True if it was accepted."""
        checked = ingest.check(topic, payload, self.towns, max_bytes=self.settings.max_payload)
        if isinstance(checked, ingest.Rejected):
            self.metrics.rejected.labels(checked.reason.value).inc()
            town = checked.town if checked.town in self.towns else None  # bounded keys
            self._throttle.warning(
                (town, checked.reason),
                f"rejected a message on {topic} ({checked.reason}): {checked.detail}",
            )
            return False
        self._accepted[checked.KIND].inc()
        if self.fleet.apply(checked, received, retained=retained):
            self.store.add(checked, received, payload)
        elif checked.KIND is Kind.EVENT:
            self.metrics.duplicates.inc()
        return True

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        try:
            self.handle(message.topic.value, bytes(payload), time.time(), retained=message.retain)
        except Exception as exc:  # a bug must not drop the connection, nor pass unsaid
            self._throttle.error(
                ("handle",), f"handling a message on {message.topic} failed: {exc!r}"
            )

    async def _mqtt(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                async with aiomqtt.Client(
                    **self.settings.mqtt.client_options(),
                    identifier=self.settings.client_id,
                    clean_session=False,  # QoS 1 events wait for us while we are down
                    keepalive=KEEPALIVE_S,
                    timeout=10,
                    queue_type=_handled_on_arrival(self._on_message),
                ) as client:
                    for kind in Kind:
                        topic = f"{messages.ROOT}/+/{kind.leaf}"
                        await client.subscribe(topic, qos=SUBSCRIBE_QOS[kind])
                    self._connected(True, None)
                    failures = 0
                    await self._until_stopped_or_lost(client)
            except aiomqtt.MqttError as exc:
                failures += 1
                self._connected(False, str(exc))
                delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** min(failures, 16))
                delay *= random.uniform(0.5, 1.0)  # operations centers must not retry in step
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)

    async def _until_stopped_or_lost(self, client: aiomqtt.Client) -> None:
        """Until `stop` (returns) or the connection ends (raises MqttError).
        The stop is awaited, not left to a cancellation: Python 3.11's
        `asyncio.wait_for`, which aiomqtt awaits in, can swallow a cancel
        that lands as its future completes (a stop right after the start
        then hung here for ever)."""

        async def drain() -> None:
            async for _ in client.messages:
                pass  # nothing is queued (handled on arrival); ends with the connection

        lost = asyncio.create_task(drain(), name="opscenter-mqtt-drain")
        stopped = asyncio.create_task(self._stop.wait(), name="opscenter-mqtt-stop")
        try:
            await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (lost, stopped):
                task.cancel()
            await asyncio.gather(lost, stopped, return_exceptions=True)
        if lost.done() and not lost.cancelled():
            error = lost.exception()
            if error is not None:
                raise error  # the connection ended: MqttError, and the caller reconnects

    def _connected(self, connected: bool, error: str | None) -> None:
        if connected != self.link.connected or self.link.since is None:
            if connected:
                log.info(
                    "mqtt: subscribed at %s as %s", self.settings.mqtt, self.settings.client_id
                )
            else:
                log.warning("mqtt: %s unreachable (%s); retrying", self.settings.mqtt, error)
            self.link.since = time.time()
        self.link.connected = connected
        self.link.last_error = error
        self.metrics.mqtt_connected.set(1 if connected else 0)

    # -- storage -------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FLUSH_S)
            await self._flush()

    async def _flush(self) -> None:
        before = self.store.rows_written
        try:
            await self.store.flush()
        except sqlite3.Error as exc:
            self.metrics.db_errors.inc()
            self._throttle.error(("db",), f"database write failed (kept for the next try): {exc}")
            return
        self.metrics.db_rows.inc(self.store.rows_written - before)

    async def _prune_forever(self) -> None:
        while not self._stop.is_set():
            try:
                removed = await self.store.prune(time.time())
            except sqlite3.Error as exc:
                self._throttle.error(("prune",), f"pruning the database failed: {exc}")
            else:
                if removed:
                    log.info("pruned %d rows past their retention", removed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PRUNE_EVERY_S)

    # -- running -------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self, listener: socket.socket) -> None:
        """Serve on `listener` (bound by the caller, so a port in use is an
        error before anything starts) until SIGTERM/SIGINT or `stop`."""
        config = uvicorn.Config(
            webconfig.guard_asgi(create_app(self.ctx), self.settings.web),
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ssl_context_factory=webconfig.ssl_context_factory(self.settings.web),
        )
        server = uvicorn.Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        tasks = [
            asyncio.create_task(self._mqtt(), name="opscenter-mqtt"),
            asyncio.create_task(self._flush_forever(), name="opscenter-flush"),
            asyncio.create_task(self._prune_forever(), name="opscenter-prune"),
            asyncio.create_task(server.serve(sockets=[listener]), name="opscenter-http"),
        ]
        log.info(
            "operations center for %d towns: %s://%s:%d/ (broker %s, database %s)",
            len(self.towns), webconfig.scheme(self.settings.web), self.settings.host,
            self.settings.port, self.settings.mqtt, self.settings.db,
        )  # fmt: skip
        stopped = asyncio.create_task(self._stop.wait(), name="opscenter-stop")
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        self._stop.set()
        server.should_exit = True
        for task in tasks:
            if task.get_name() != "opscenter-http":
                task.cancel()
        _, hung = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
        for task in hung:  # the last rows still reach the disk
            log.warning("%s did not end %g s after the stop", task.get_name(), STOP_TIMEOUT_S)
        await self._flush()
        for ended in tasks:
            if ended in done and not ended.cancelled() and (error := ended.exception()):
                raise error  # a task that ended on its own by failing
