"""Run a batch's per-file work on a Dask cluster (``--scheduler tcp://HOST:PORT``).

The cluster replaces the local worker processes and nothing else: the batch
driver still finds the inputs, plans the outputs, shows progress and writes
the summary and ``--report``; Dask's workers read the inputs and write the
outputs themselves, so inputs and outputs must be on a file system every
worker sees at the same path as this process (relative paths are resolved
against this process's working folder).

One task runs a few files (see :class:`_Grouping`); results come back as
tasks finish. Dask reschedules the tasks of a worker that dies on another
worker; a task whose workers keep dying is given up by the scheduler after
``distributed.scheduler.allowed-failures`` + 1 deaths (Dask's default 3: four
tries). Such a task may be an innocent that shared a worker with the
culprit, or a group holding it: its files are run again one at a time with
nothing else of this run on the cluster, and only a file that still kills
its workers alone is reported as failed. Rerunning a file is safe because
every output is written to a temporary name and renamed.

Importing this module does not import Dask; :class:`DaskExecutor` does, and
says how to install it when it is missing.
"""

from __future__ import annotations

import collections
import logging
import os
import time

from .jobs import Executor, RunProblem, SetupProblem, UsageProblem, failed

INSTALL_HINT = "pip install 'convfilter[dask]'"
SECONDS_PER_TASK = 0.2  # files are grouped until a task takes about this long
MAX_FILES_PER_TASK = 32
TASKS_PER_THREAD = 3  # tasks submitted ahead per worker thread, so no worker waits for the client
CLOSE_SECONDS = 10.0  # a run that ended waits this long for the client to disconnect from the scheduler
CLOSE_SECONDS_INTERRUPTED = 2.0  # and a run stopped by Ctrl-C or SIGTERM this long


class DaskExecutor(Executor):
    """Runs jobs as tasks on the Dask cluster whose scheduler is at ``address``.

    Connects at once, within Dask's connect timeout (raising
    :class:`~convfilter.batch.jobs.SetupProblem` when Dask is missing or the
    scheduler cannot be reached, :class:`~convfilter.batch.jobs.UsageProblem` for a
    malformed address, before any work), and disconnects on exit, cancelling
    the tasks that have not finished; a task already running on a worker
    finishes its file (whole, as always). Disconnecting waits at most
    ``CLOSE_SECONDS`` (``CLOSE_SECONDS_INTERRUPTED`` after Ctrl-C or SIGTERM):
    a scheduler that does not answer in time forgets this client's tasks when
    its connections close as the process exits.
    """

    def __init__(self, address: str):
        try:
            import distributed
        except ImportError:
            raise SetupProblem(f"--scheduler needs Dask's distributed scheduler; install it with: "
                               f"{INSTALL_HINT}") from None
        self.address = address
        try:  # a malformed address would otherwise hang in the client's clean-up
            distributed.comm.get_address_host_port(address)
        except ValueError as exc:
            raise UsageProblem(f"--scheduler '{address}' is not a Dask scheduler address like "
                               f"tcp://HOST:8786 ({exc})") from None
        try:
            self.client = distributed.Client(address, set_as_default=False)
        except (OSError, ValueError, TimeoutError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SetupProblem(f"--scheduler {address}: cannot connect to a Dask scheduler ({reason})") from None
        self._running: dict = {}  # future -> the jobs it runs
        self._quiet = _Quiet()  # our messages say what went wrong, in one line each

    def map_unordered(self, work, jobs):
        from concurrent.futures import CancelledError

        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        from .. import __version__

        if hasattr(work, "anchored"):  # the workers' working folder is not ours
            work = work.anchored(os.getcwd())
        waiting = collections.deque(jobs)
        suspects: collections.deque = collections.deque()  # jobs of tasks whose workers all died
        alone = set()  # tasks of one suspect, run with nothing else of ours on the cluster
        finished = as_completed(loop=self.client.loop)
        capacity = _Capacity(self.client)
        grouping = _Grouping()

        def submit(group: list) -> object:
            future = self.client.submit(run_jobs, work, group, __version__, pure=False)
            self._running[future] = group
            finished.add(future)
            return future

        try:
            while waiting or suspects or self._running:
                if suspects:
                    if not self._running:
                        alone.add(submit([suspects.popleft()]))
                else:
                    while waiting and len(self._running) < capacity.tasks():
                        submit([waiting.popleft() for _ in range(min(grouping.size(), len(waiting)))])
                future = next(finished)
                group = self._running.pop(future)
                try:  # a result lost with its worker since it finished is computed again first
                    results = future.result()
                except CancelledError:  # not by us: the client lost the scheduler
                    raise RunProblem(f"--scheduler {self.address}: lost the Dask scheduler; inputs not "
                                     "reported were not run (rerun with --skip-existing to resume)") from None
                except KilledWorker as error:
                    if future not in alone:
                        # the file that kills workers took its group, and maybe tasks that shared its
                        # workers, down with it: run each alone to find it
                        suspects.extend(group)
                        continue
                    results = failed(group, f"{error.allowed_failures + 1} Dask workers died while processing "
                                             "it (out of memory? see the workers' logs); not retried further")
                except Exception as error:  # raised by the task on the worker (Work itself never raises)
                    results = failed(group, f"on the Dask cluster: {type(error).__name__}: "
                                             f"{' '.join(str(error).split())}")
                grouping.learn(results)
                yield from results
        finally:
            self._cancel()

    def __enter__(self):
        self._quiet.install()
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        try:
            self._cancel()
            self._disconnect(CLOSE_SECONDS_INTERRUPTED if interrupted else CLOSE_SECONDS)
        finally:
            self._quiet.remove()

    def _disconnect(self, seconds: float) -> None:
        try:
            self.client.close(timeout=seconds)
        except (TimeoutError, OSError):
            # given up: marked closed, or the client's finalizer would wait for the scheduler again
            self.client.status = "closed"

    def _cancel(self) -> None:
        running, self._running = list(self._running), {}
        if running:
            try:
                self.client.cancel(running)
            except Exception:  # a lost connection: the scheduler forgets our tasks when we close
                pass


def run_jobs(work, jobs, version: str) -> list:
    """On a worker: run ``work`` on each job with single-threaded kernels; one Result per job.

    Refuses (as failed results) to run with a convfilter version other than
    the client's, whose output bytes could differ.
    """
    from .. import __version__

    if version != __version__:
        return failed(jobs, f"the Dask worker has convfilter {__version__}, this client {version}; "
                             "install the same version on the workers")
    from .. import outputs  # noqa: F401  (numpy and Numba; unpickling the work loaded them already)
    from .threads import single_threaded_kernels

    single_threaded_kernels()  # each Dask worker thread is one CPU's worth of work
    return [work(job) for job in jobs]


class _Quiet(logging.Filter):
    """Keeps Dask's client-side log records (reconnection tracebacks...) off stderr, but the
    critical ones; installed on the handlers of Dask's logger for the executor's life."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL

    def install(self) -> None:
        for handler in logging.getLogger("distributed").handlers:
            handler.addFilter(self)

    def remove(self) -> None:
        for handler in logging.getLogger("distributed").handlers:
            handler.removeFilter(self)


class _Capacity:
    """How many tasks to keep submitted: a few per worker thread, rechecked as the cluster scales."""

    RECHECK_SECONDS = 2.0

    def __init__(self, client):
        self.client = client
        self.checked = float("-inf")
        self.threads = 1

    def tasks(self) -> int:
        now = time.monotonic()
        if now - self.checked >= self.RECHECK_SECONDS:
            self.checked = now
            self.threads = max(sum(self.client.nthreads().values()), 1)
        return TASKS_PER_THREAD * self.threads


class _Grouping:
    """Files per task: one until the first results tell how long a file takes, then enough
    files for a task of about ``SECONDS_PER_TASK`` (small files would otherwise pay Dask's
    per-task cost, a few milliseconds, more than their own)."""

    def __init__(self):
        self.files = 0
        self.seconds = 0.0

    def learn(self, results: list) -> None:
        timed = [r.seconds for r in results if r.status == "processed"]
        self.files += len(timed)
        self.seconds += sum(timed)

    def size(self) -> int:
        if self.files < 4:
            return 1
        per_file = self.seconds / self.files
        return max(1, min(MAX_FILES_PER_TASK, int(SECONDS_PER_TASK / max(per_file, 1e-6))))
