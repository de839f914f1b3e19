"""Executors that run a batch's work on this machine, and the choice of executor for a run.

:class:`SerialExecutor` runs the jobs in this process, :class:`ProcessExecutor`
in worker processes; :func:`make_executor` picks one of them, or the Dask
cluster's (:mod:`.dask_executor`) for a scheduler address. The interface every
executor follows is :class:`~convfilter.batch.jobs.Executor`.
"""

from __future__ import annotations

import collections
import gc
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait

from .._signals import install_held
from .jobs import Executor, Result
from .threads import single_threaded_kernels


class SerialExecutor(Executor):
    """Runs every job in this process, one after the other (``--jobs 1``, or a single input)."""

    def map_unordered(self, work, jobs):
        for job in jobs:
            yield work(job)


class ProcessExecutor(Executor):
    """Runs jobs in ``workers`` processes started once, one job at a time per worker.

    The parent loads (warms) the kernels the work needs before forking, so
    every worker starts with them compiled and loaded. Workers ignore Ctrl-C
    (the parent stops them), turn SIGTERM into a clean exit that removes any
    temporary file, and die with the parent. A worker that dies mid-job
    (killed, out of memory) fails that job only; a new worker takes its place.
    """

    STOP_TIMEOUT = 5.0
    PREFETCH = 2

    def __init__(self, workers: int):
        self.workers = workers
        self.context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._processes: dict = {}  # connection -> process

    def map_unordered(self, work, jobs):
        if hasattr(work, "warm"):
            work.warm()
        pending = list(reversed(jobs))  # pop() gives the next job in order
        queued: dict = {}  # connection -> jobs sent to that worker, oldest (running) first
        clean = False
        try:
            gc.freeze()  # workers' collections then skip the parent's objects: fewer copied pages
            for _ in range(min(self.workers, len(jobs))):
                queued[self._start(work)] = collections.deque()
            for connection in queued:
                self._give(connection, pending, queued)
            while pending or any(queued.values()):
                for connection in wait(list(queued)):
                    try:
                        result = connection.recv()
                        queued[connection].popleft()
                    except (EOFError, OSError):  # the worker died: fail the job it was running
                        lost = queued.pop(connection)
                        how = self._retire(connection)
                        result = Result(lost[0].index, lost[0].source, "failed",
                                        error=f"the worker process died ({how})") if lost else None
                        pending.extend(reversed(list(lost)[1:]))  # sent but not started: run elsewhere
                        connection = self._start(work)
                        queued[connection] = collections.deque()
                    if result is not None:
                        yield result
                    self._give(connection, pending, queued)
            clean = True
        finally:
            gc.unfreeze()
            self._stop(graceful=clean)

    def __exit__(self, *exc_info) -> None:
        self._stop(graceful=False)

    def _start(self, work):
        parent_end, child_end = self.context.Pipe()
        blocked = {signal.SIGINT, signal.SIGTERM}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:  # the child starts with these signals blocked and sets its own handlers first
            process = self.context.Process(target=_worker_main, args=(child_end, work, os.getpid()),
                                           daemon=True, name="convfilter-worker")
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        child_end.close()
        self._processes[parent_end] = process
        return parent_end

    def _give(self, connection, pending: list, queued: dict) -> None:
        """Keep ``PREFETCH`` jobs in the worker's pipe, so it never waits for the parent."""
        jobs = queued[connection]
        while pending and len(jobs) < self.PREFETCH:
            job = pending.pop()
            try:
                connection.send(job)
            except OSError:  # the worker died; its end-of-file shows up in wait() next
                pending.append(job)
                return
            jobs.append(job)

    def _retire(self, connection) -> str:
        """Forget a dead worker; say how it died."""
        process = self._processes.pop(connection)
        process.join(self.STOP_TIMEOUT)
        connection.close()
        code = process.exitcode
        return f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"

    def _stop(self, graceful: bool) -> None:
        """Stop every worker: ask politely after a clean run, else SIGTERM (they clean up)."""
        processes, self._processes = self._processes, {}
        for connection, process in processes.items():
            try:
                if graceful:
                    connection.send(None)
                else:
                    process.terminate()
            except (OSError, ValueError):
                pass
        for connection, process in processes.items():
            process.join(self.STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()
            connection.close()


class WorkerExit(SystemExit):
    """Raised in a worker on SIGTERM: unwinds (removing temporary files) and exits quietly."""


def _on_sigterm(signum, frame):
    raise WorkerExit(128 + signum)


def _worker_main(connection, work, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    install_held(signal.SIGTERM, _on_sigterm, raises=WorkerExit)  # not inside a block that must run whole
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    _die_with_parent(parent_pid)
    single_threaded_kernels()
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        connection.send(work(job))


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this worker when the parent dies (else it would run on orphaned)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise WorkerExit(1)


def make_executor(workers: int, scheduler: str | None = None) -> Executor:
    """The Dask cluster of ``scheduler`` (connected now), else worker processes for
    ``workers`` > 1, else this process."""
    if scheduler:
        from .dask_executor import DaskExecutor

        return DaskExecutor(scheduler)
    return ProcessExecutor(workers) if workers > 1 else SerialExecutor()
