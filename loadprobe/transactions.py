"""The transactions of one terminal: which one is current, and the sample each reports.

A transaction is a step of the workflow timed as a whole (``logon``, or
``batch`` from submit to result). In Locust's statistics it is one request
of type ``TX`` named after it, fired through the environment's public
``events.request`` hook; its HTTP requests carry the current transaction's
request context (``{"transaction": ..., "terminal": ...}``) so that the
sample recorder can file them under it.

A transaction of one request (logon, certificate) need not be reported
twice: when its request is marked as the whole transaction, the recorder's
row for that request stands for the transaction too (see recorder.py), and
no ``TX`` request is fired, unless the transaction failed for another
reason than that request.

Nothing here knows Locust or HTTP: a `TransactionRecorder` is handed the
request event to fire and is told about each judged request.
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class StepFailed(Exception):
    """A request failed or its answer did not pass the content check."""


class TransactionFailed(Exception):
    """The exception a failed transaction is reported with (its message is the reason)."""


class RequestEvent(Protocol):
    """Locust's ``environment.events.request`` (an EventHook), as far as used here."""

    def fire(self, **kwargs: Any) -> Any: ...


class TransactionRecorder:
    """The bookkeeping of one terminal's transactions (one per terminal)."""

    __slots__ = (
        "_contexts",
        "_event",
        "_terminal",
        "bytes",
        "context",
        "current",
        "whole",
        "whole_reason",
    )

    def __init__(self, request_event: RequestEvent, terminal: int) -> None:
        self._event = request_event
        self._terminal = terminal
        self._contexts: dict[str, dict[str, Any]] = {}
        self.current = ""
        self.context: dict[str, Any] = {}  # the request context of the current transaction
        self.bytes = 0  # response bytes of the current transaction
        self.whole = False  # a request that is the whole transaction was made
        self.whole_reason: str | None = None  # ... and why it failed, if it did

    def transaction(self, name: str) -> Transaction:
        """``with recorder.transaction(name):`` times the body as transaction `name`."""
        return Transaction(self, name)

    def enter(self, name: str) -> None:
        """Make `name` the current transaction (its request context is made once,
        as Locust merges it into every request)."""
        self.current = name
        context = self._contexts.get(name)
        if context is None:
            context = self._contexts[name] = {"transaction": name, "terminal": self._terminal}
        self.context = context

    def request_name(self, step: str | None) -> str:
        """The name of a request in Locust's statistics: ``<transaction>: <step>``."""
        return self.current if step is None else f"{self.current}: {step}"

    def judged(self, *, length: int, whole: bool, reason: str | None) -> None:
        """One request of the current transaction was judged (and reported)."""
        self.bytes += length
        if whole:
            self.whole = True
            if reason is not None:
                self.whole_reason = reason

    def begin(self, name: str) -> str:
        """Start transaction `name`; returns the transaction it interrupts, if any."""
        previous = self.current
        self.enter(name)
        self.bytes, self.whole, self.whole_reason = 0, False, None
        return previous

    def finish(self, name: str, start: float, elapsed: float, error: str | None) -> None:
        """Fire transaction `name`'s TX request (`error`: why it failed, or None)."""
        # A whole-transaction request already recorded this transaction,
        # unless something failed after it (not in this workflow).
        if self.whole and error == self.whole_reason:
            return
        self._event.fire(
            request_type="TX",
            name=name,
            response_time=elapsed * 1000,
            response_length=self.bytes,
            response=None,
            context=self._contexts[name],
            exception=None if error is None else TransactionFailed(error),
            start_time=start,
            url=None,
        )


class Transaction:
    """The context manager behind `TransactionRecorder.transaction` (a class, not a
    generator: it is on every request's path). Any exception in the body fails
    the transaction and leaves it as StepFailed with the reason."""

    __slots__ = ("name", "previous", "recorder", "start", "t0")

    def __init__(self, recorder: TransactionRecorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    def __enter__(self) -> None:
        self.previous = self.recorder.begin(self.name)
        self.start, self.t0 = time.time(), time.perf_counter()

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        elapsed = time.perf_counter() - self.t0
        self.recorder.enter(self.previous)
        if exc is None:
            error = None
        elif isinstance(exc, StepFailed):
            error = str(exc)
        elif isinstance(exc, Exception):
            error = f"{type(exc).__name__}: {exc}"
        else:  # GreenletExit: the run ended under this transaction, no sample
            return
        self.recorder.finish(self.name, self.start, elapsed, error)
        if error is not None and not isinstance(exc, StepFailed):
            raise StepFailed(error) from exc
