"""Run test workers on threads or processes so that a worker that dies fails the test.

A thread's exception only reaches ``threading.excepthook``; a test that joins its threads and
then checks shared state can pass with most of its workers dead. These helpers hand every
worker's exception (and any worker still running at the deadline) back to the test as a failure.
"""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any


class WorkerFailed(AssertionError):
    """One or more workers raised, exited non-zero or did not finish in time."""


def run_threads(
    target: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    timeout_s: float = 120.0,
    start_together: bool = False,
) -> list[Any]:
    """Run ``target(*a)`` for each ``a`` on its own thread; their return values, in order.

    ``start_together`` holds every worker at a barrier so they contend from the first call.
    """
    results: list[Any] = [None] * len(args)
    failures: dict[int, str] = {}
    finished: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(len(args)) if start_together else None

    def run(index: int, worker_args: tuple[Any, ...]) -> None:
        try:
            if barrier is not None:
                barrier.wait(timeout_s)
            value = target(*worker_args)
        except BaseException:  # noqa: BLE001 - every failure is handed to the test
            with lock:
                failures[index] = traceback.format_exc()
        else:
            with lock:
                results[index] = value
                finished.add(index)

    threads = [threading.Thread(target=run, args=(n, a), daemon=True) for n, a in enumerate(args)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    stuck = [n for n, thread in enumerate(threads) if thread.is_alive()]
    _raise_if_failed(failures, stuck, len(args))
    assert finished == set(range(len(args)))
    return results


def run_processes(
    target: Callable[..., Any], args: Sequence[tuple[Any, ...]], *, timeout_s: float = 120.0
) -> None:
    """Run ``target(*a)`` in a spawned process per ``a``; any non-zero exit fails the test."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, args=a) for a in args]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout_s)
    stuck = [n for n, proc in enumerate(procs) if proc.is_alive()]
    for n in stuck:
        procs[n].kill()
        procs[n].join(5)
    # A spawned worker's traceback goes to its stderr (captured by pytest); the exit code says it died.
    failures = {n: f"exit code {proc.exitcode}" for n, proc in enumerate(procs) if n not in stuck and proc.exitcode != 0}
    _raise_if_failed(failures, stuck, len(args))


def _raise_if_failed(failures: dict[int, str], stuck: list[int], total: int) -> None:
    if not failures and not stuck:
        return
    lines = [f"{len(failures)} of {total} workers failed, {len(stuck)} did not finish {stuck}"]
    lines += [f"--- worker {n}:\n{detail}" for n, detail in sorted(failures.items())]
    raise WorkerFailed("\n".join(lines))
