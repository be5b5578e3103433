"""The analysis threads of a server process: every connection's queued work, in lock-step.

A connection hands its batch of frames to :meth:`AnalysisPool.run` as a *job*: a generator that
yields ``(engine session, chunks)`` feed requests (the frames it has waiting, in order), receives
one result per chunk (a :class:`~vibescope.stream.events.FeedResult` or the exception it raised), and
returns its result. A pool thread takes every job waiting and advances them together: each
round, one request of every job goes through :func:`vibescope.stream.lockstep.feed_many`, so every stage sees
the ticks of all sessions at once and runs its models once per tick round for all of them
(silero-vad, the separator and TAGF take a batch row per session), and each model's weights stay
in the CPU caches while it runs. One session after the other, the same work cost about twice the CPU
(README, Performance). Under light load a round holds one session and nothing waits for company:
a job starts as soon as a thread is free.

Jobs awaited with :meth:`AnalysisPool.run` are handed back to their event loop once per round, all
of that round's finished jobs in one ``call_soon_threadsafe`` (each call writes to the loop's
wake-up pipe: one system call per finished job was about 3 % of a loaded process's time).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Generator
from concurrent.futures import Future
from typing import Any

from vibescope.stream.events import FeedResult
from vibescope.stream.lockstep import feed_many
from vibescope.stream.media import Chunk
from vibescope.stream.session import Session

GATHER_GAP_S = 0.004  # a round starts once no job has come for this long...
GATHER_MAX_S = 0.020  # ...or this long after its first job came

Job = Generator[tuple[Session, list[Chunk]], "list[FeedResult | Exception] | BaseException", Any]
# an awaiting event loop and the future it awaits, for jobs submitted with AnalysisPool.run
Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future]


def call(fn: Callable[..., Any], *args: Any) -> Job:
    """A plain function call as a job (state loading and saving at session start)."""
    return fn(*args)
    yield  # unreachable: makes this a generator


class AnalysisPool:
    """``threads`` analysis threads sharing one queue of jobs; see the module docstring."""

    def __init__(self, threads: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future, Job, Waiter | None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.rounds = 0  # feed_many calls so far
        self.requests = 0  # sessions fed in them (requests / rounds = mean sessions per round)
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"analysis-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def submit(self, job: Job, waiter: Waiter | None = None) -> Future:
        fut: Future = Future()
        self._jobs.put((fut, job, waiter))
        return fut

    async def run(self, job: Job) -> Any:
        """Run a job in the pool; its return value, or its exception raised here."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.submit(job, (loop, waiter))
        return await waiter

    def shutdown(self) -> None:
        """Threads stop after the jobs they have taken; jobs still queued are cancelled."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)

    def _loop(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            # every job waiting joins this round, and those that come in while jobs keep coming:
            # the connections whose last round just ended resubmit within a few ms (after their
            # store write), and a round that waits for them analyses twice as many sessions
            deadline = time.monotonic() + GATHER_MAX_S
            while jobs[-1] is not None:
                wait = min(GATHER_GAP_S, deadline - time.monotonic())
                try:
                    jobs.append(self._jobs.get(timeout=wait) if wait > 0 else self._jobs.get_nowait())
                except queue.Empty:
                    break
            stop = jobs[-1] is None or self._closed
            jobs = [job for job in jobs if job is not None]
            if self._closed:
                done: dict[asyncio.AbstractEventLoop, list[tuple[Future, asyncio.Future]]] = defaultdict(list)
                for fut, _, waiter in jobs:
                    fut.cancel()
                    _finished(done, fut, waiter)
                _wake(done)
            else:
                self._advance(jobs)
            if stop:
                return

    def _advance(self, jobs: list[tuple[Future, Job, Waiter | None]]) -> None:
        """Run the jobs to their end, one feed request of each per round."""
        pending: list[tuple[Future, Job, Waiter | None, tuple[Session, list[Chunk]]]] = []
        done: dict[asyncio.AbstractEventLoop, list[tuple[Future, asyncio.Future]]] = defaultdict(list)
        for fut, job, waiter in jobs:
            if waiter is not None and waiter[1].cancelled():  # its awaiting task has gone
                fut.cancel()
            if fut.set_running_or_notify_cancel():  # False: cancelled while it waited
                _step(fut, job, waiter, None, pending, done)
        _wake(done)
        while pending:
            try:
                results: list[Any] = feed_many([request for *_, request in pending])
            except Exception as exc:  # a bug outside any one session: every job of the round gets it
                results = [exc] * len(pending)
            with self._lock:
                self.rounds += 1
                self.requests += len(pending)
            advanced: list[tuple[Future, Job, Waiter | None, tuple[Session, list[Chunk]]]] = []
            done = defaultdict(list)
            for (fut, job, waiter, _), result in zip(pending, results, strict=False):
                _step(fut, job, waiter, result, advanced, done)
            _wake(done)
            pending = advanced


def _step(fut: Future, job: Job, waiter: Waiter | None, value: Any, pending: list, done: dict) -> None:
    """Send a job its last request's results (throw in an exception instead, should feed_many itself
    have failed) and queue its next request; or settle its future when it has finished (and note
    its waiter, woken with the round's others)."""
    try:
        request = job.throw(value) if isinstance(value, BaseException) else job.send(value)
    except StopIteration as stop:
        fut.set_result(stop.value)
    except BaseException as exc:
        fut.set_exception(exc)
    else:
        pending.append((fut, job, waiter, request))
        return
    _finished(done, fut, waiter)


def _finished(done: dict, fut: Future, waiter: Waiter | None) -> None:
    """Note a settled job's waiter, to be woken with the others of its round (:func:`_wake`)."""
    if waiter is not None:
        done[waiter[0]].append((fut, waiter[1]))


def _wake(done: dict[asyncio.AbstractEventLoop, list[tuple[Future, asyncio.Future]]]) -> None:
    """Hand finished jobs to the event loops awaiting them: one wake-up per loop."""
    for loop, settled in done.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # the loop has closed: nobody awaits these any more
            pass


def _settle(settled: list[tuple[Future, asyncio.Future]]) -> None:
    """In the event loop: copy each finished job's outcome to the future its task awaits."""
    for fut, waiter in settled:
        if waiter.cancelled():
            continue
        if fut.cancelled():
            waiter.cancel()
        elif fut.exception() is not None:
            waiter.set_exception(fut.exception())
        else:
            waiter.set_result(fut.result())
