"""The request's deadline, handed to the botocore hooks that bound each attempt of an AWS call by it.

Callers that know the deadline wrap their calls in ``until(deadline)``; a ``before-send`` hook on the client asks
``left()`` and refuses an attempt that could not end in time. Outside ``until`` calls are bounded only by their
client's timeouts.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

_deadline: contextvars.ContextVar[Optional[float]] = contextvars.ContextVar("deadline", default=None)


@contextmanager
def until(deadline: Optional[float]) -> Iterator[None]:
    """Calls made inside are bounded by ``deadline`` (a ``time.monotonic()`` value; None: unbounded)."""
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def left() -> Optional[float]:
    """Seconds left before the current deadline; None when there is none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
