"""A connection pool that serves the requests waiting for a connection in the order they arrived.

SQLAlchemy's asyncio pool keeps its idle connections in an `asyncio.Queue`. A connection given back is
taken by whichever coroutine asks next: a request that has just arrived (it tries the queue before waiting)
or a waiter that was woken but has not run yet, which then finds the queue empty and waits again at the end
of the line. Under a load above the pool's size, an unlucky request loses that race again and again: the
median does not move, the slowest requests wait ten times longer. Measured with the load benchmark (a
territory by code at 32 connections, pool of 10 per worker): p99 50 to 125 ms against 15 to 20 with this
queue, for the same throughput.

`FairAsyncQueue` hands a connection given back straight to the longest waiter, and a newcomer waits behind
the waiters instead of overtaking them. The pool's timeout is unchanged: a request still waits at most
`pool_timeout` seconds, then gets SQLAlchemy's `TimeoutError` (answered 503).

The direct path (`app.core.direct`) waits in the same line (`join`), for either a pooled connection or
one that another direct request hands over without giving it back to the pool (`hand`): first come, first
served across both paths."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.pool.base import _ConnectionRecord
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty

_T = TypeVar("_T")


class FairAsyncQueue(AsyncAdaptedQueue[_T]):
    """First come, first served: the idle items are in the asyncio queue only while nobody waits."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[asyncio.Future[_T]] = deque()
        # The direct path's waiters (`join`), which take a connection handed over as well as a pooled one,
        # with their deadlines, in the order they came; one timer, for the earliest deadline (`_expire`).
        self._direct: dict[asyncio.Future[Any], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        # Called (in the waiting request's greenlet) when a request starts waiting: connections held idle
        # outside the pool (`app.core.direct`) come back to it then, to the waiters.
        self.before_wait: Callable[[], None] | None = None

    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    def available(self) -> bool:
        """Whether a request asking now would get an idle connection without waiting."""
        return not self._queue.empty() and not self.waiting()

    def first_direct(self) -> asyncio.Future[Any] | None:
        """The longest waiter if it is the direct path's (`join`), which may be handed a connection
        outside the pool (`hand`); None when nobody waits or the longest waiter is the pool's."""
        while self._waiters:
            waiter = self._waiters[0]
            if not waiter.done():
                return waiter if waiter in self._direct else None
            self._waiters.popleft()
            self._direct.pop(waiter, None)
        return None

    def join(self, seconds: float) -> asyncio.Future[Any]:
        """A place in the line for the direct path, for at most `seconds`: its future gets a pooled
        connection's record (`put`), a connection handed over (`hand`), or TimeoutError. The caller awaits
        it, and calls `leave` if it stops waiting.

        Every direct waiter waits for the same time (the pool's timeout) and they come in order, so the
        earliest deadline is the longest direct waiter's: one timer serves them all, instead of one per
        request."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + seconds
        self._waiters.append(waiter)
        self._direct[waiter] = deadline
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_at(deadline, self._expire)
            self._timer_loop = loop
        return waiter

    def _expire(self) -> None:
        """The direct waiters past their deadline get TimeoutError; the timer is set again for the next."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for waiter, deadline in list(self._direct.items()):
            if waiter.done() or waiter.get_loop() is not loop:
                # Served already, or left behind by a loop that has closed (tests run several in turn).
                del self._direct[waiter]
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                continue
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del self._direct[waiter]
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            waiter.set_exception(TimeoutError())

    def hand(self, waiter: asyncio.Future[Any], item: Any) -> None:
        """`item` to `waiter`, the longest waiter (`first_direct`), outside the pool."""
        self._waiters.remove(waiter)
        self._direct.pop(waiter, None)
        waiter.set_result(item)

    def leave(self, waiter: asyncio.Future[Any]) -> Any:
        """A direct-path waiter gives up (cancelled): out of the line. Returns what it was handed
        meanwhile, if anything (a pooled connection's record or a connection), for the caller to pass on."""
        self._direct.pop(waiter, None)
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            return waiter.result()
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        return None

    def put_nowait(self, item: _T) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            self._direct.pop(waiter, None)
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def put(self, item: _T, block: bool = True, timeout: float | None = None) -> None:
        # The pool gives connections back without blocking (its queue never holds more than its size).
        self.put_nowait(item)

    def get(self, block: bool = True, timeout: float | None = None) -> _T:
        if not self.waiting():
            try:
                return self._queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
        if not block:
            raise Empty()
        waiter: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self.before_wait is not None:
            # In line first, so that what the hook gives back comes to the waiters in their order.
            try:
                self.before_wait()
            except BaseException:
                self._leave(waiter)
                raise
        return await_(self._wait(waiter, seconds=timeout))

    async def _wait(self, waiter: asyncio.Future[_T], seconds: float | None) -> _T:
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except BaseException as exc:
            self._leave(waiter)
            if isinstance(exc, TimeoutError):
                raise Empty() from exc
            raise

    def _leave(self, waiter: asyncio.Future[_T]) -> None:
        """A waiter gives up (timeout, cancellation, an error): out of the line, and a connection it was
        handed meanwhile goes on to the next waiter or back to the queue."""
        if waiter.done() and not waiter.cancelled():
            self.put_nowait(waiter.result())
        else:
            waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool on `FairAsyncQueue`."""

    _queue_class: Any = FairAsyncQueue
    _handed: _ConnectionRecord | None = None

    def _do_get(self) -> Any:
        handed, self._handed = self._handed, None
        if handed is not None:
            return handed
        return super()._do_get()

    def checkout_handed(self, record: _ConnectionRecord, connect: Callable[[], _T]) -> _T:
        """`connect()` (the engine's checkout, synchronous: in a greenlet) on `record`, a connection this
        pool's queue handed to a direct-path waiter (`FairAsyncQueue.join`): the checkout's events run on
        it as on any other."""
        self._handed = record
        try:
            return connect()
        finally:
            if self._handed is record:
                # Not reached (the checkout failed before it asked): the connection goes back to the line.
                self._handed = None
                self._pool.put_nowait(record)
