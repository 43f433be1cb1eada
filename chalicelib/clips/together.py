"""Calls sent together: what a listener waits for is the number of S3 requests made one after another, not the
number of requests, so those that do not depend on each other go out at once.

A small pool shared by the process (boto3 clients are thread-safe). Each call runs in a copy of its caller's
context, so the request's deadline (``chalicelib.deadlines``, a context variable) bounds its S3 attempts as it would
in the caller's thread. A call never waits for another call of the pool, so however many requests share it, it
cannot deadlock; at worst a call waits for a free worker, and ``Pending.result`` gives up at the deadline.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Generic, Optional, TypeVar

from chalicelib.deadlines import until
from chalicelib.errors import StorageTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")
WORKERS = 8  # a Lambda serves one request at a time and sends at most 2 calls at once; `chalice local` serves more
RESULT_GRACE_S = 1.0  # past the deadline, a caller waits this much longer for a call bounded by that deadline

_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="together")
        return _pool


class Pending(Generic[T]):
    """One call on its way: ``result()`` waits for its answer and raises what it raised."""

    def __init__(self, future: "Future[T]", deadline: float, what: str):
        self._future = future
        self._deadline = deadline
        self.what = what

    def result(self) -> T:
        try:
            return self._future.result(timeout=max(self._deadline - time.monotonic(), 0.0) + RESULT_GRACE_S)
        except FutureTimeout:
            raise StorageTimeout(
                "Audio storage did not answer in time; try again shortly",
                detail=f"{self.what}: no answer by the deadline",
            ) from None

    def value(self) -> Optional[T]:
        """The answer, or None when the call failed: for calls that only save a round trip when they succeed."""
        try:
            return self.result()
        except Exception as error:  # the caller falls back to the way that does not need this answer
            log.info("%s failed, not needed: %r", self.what, error)
            return None

    def then(self, use: Callable[[T], Any]) -> None:
        """``use(answer)`` once the call has succeeded (now, or later on the pool's thread); failures are dropped."""

        def done(future: "Future[T]") -> None:
            if not future.cancelled() and future.exception() is None:
                try:
                    use(future.result())
                except Exception:  # a hint not learnt: nothing depends on it
                    log.exception("using the answer of %s", self.what)

        self._future.add_done_callback(done)


def send(deadline: float, what: str, call: Callable[..., T], *args: Any) -> Pending[T]:
    """Start ``call(*args)`` on the shared pool, in a copy of this context, bounded by ``deadline``."""
    context = contextvars.copy_context()
    return Pending(_executor().submit(context.run, _bounded, deadline, call, *args), deadline, what)


def _bounded(deadline: float, call: Callable[..., T], *args: Any) -> T:
    with until(deadline):
        return call(*args)
