"""The types a batch passes between its parts: options, jobs, results, the work, executors, errors.

A leaf: every other module of the batch (and any executor) imports these, and
this module imports none of them. Pure Python; the work loads numpy, Pillow
and Numba only when it runs.
"""

from __future__ import annotations

import io as _io
import json
import time
from dataclasses import dataclass, field, replace

from ..messages import display_name
from ..recipe import Recipe


class UsageProblem(ValueError):
    """The options cannot work together (the CLI turns this into exit code 2)."""


class RunProblem(RuntimeError):
    """The run as a whole cannot go on (e.g. the cluster running it went away); the CLI prints
    it as one line and exits with ``exit_code``."""

    exit_code = 1


class SetupProblem(RunProblem):
    """The run cannot start where it was asked to run (a missing extra, an unreachable
    cluster); nothing was read or written."""

    exit_code = 2


@dataclass(frozen=True)
class BatchOptions:
    """How a run finds its inputs, names its outputs and reports; the CLI's batch options."""

    recursive: bool = False
    from_list: str | None = None
    include_outputs: bool = False
    name: str | None = None
    skip_existing: bool = False
    jobs: int | None = None  # None: the usable CPU count
    fail_fast: bool = False
    report: str | None = None
    verbosity: int = 0  # -1 quiet (errors only), 0 normal, 1 verbose
    scheduler: str | None = None  # a Dask scheduler's address: run the jobs on that cluster


@dataclass(frozen=True)
class Job:
    """One input of a run.

    ``index`` is its position in the run (``{index}`` in names); ``subfolder``
    is its folder relative to the folder argument it came from, mirrored under
    the output folder; ``data`` holds stdin's bytes for ``-``; ``stem``, when
    set, names its outputs instead of its own stem (see
    :func:`~convfilter.batch.planning.plan_jobs`).
    """

    index: int
    source: str
    subfolder: str = ""
    data: bytes | None = field(default=None, repr=False)
    outputs: tuple[str, ...] = ()
    stem: str | None = None


@dataclass
class Result:
    """What became of one job. ``status`` is processed, failed or skipped.

    ``error`` is the reason a job failed as one readable line; ``detail`` the whole of it
    (libraries can say a lot), for the ``--report``. ``warnings`` are what the user should
    know about a job processed anyway (an image read truncated).
    """

    index: int
    source: str
    status: str
    outputs: list[str] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    stdout: bytes = b""  # data for stdout (a map with -o -, or global pool values), written in input order
    detail: str | None = None
    warnings: list[str] = field(default_factory=list)

    def report_line(self) -> str:
        return json.dumps({
            "path": display_name(self.source), "status": self.status, "outputs": self.outputs,
            "shapes": [list(s) for s in self.shapes], "seconds": round(self.seconds, 6), "error": self.error,
            "detail": self.detail or self.error, "warnings": self.warnings,
        })


NOT_AN_IMAGE, OUR_OUTPUT = "not an image", "written by convfilter"  # why a found file is left out


def failed(jobs, message: str) -> list[Result]:
    """A failed Result for each of ``jobs``, all with ``message``."""
    return [Result(job.index, job.source, "failed", error=message) for job in jobs]


@dataclass(frozen=True)
class Work:
    """The per-file work of a run: a picklable callable ``Work(recipe, plan)(job) -> Result``.

    It never raises for a bad input, whatever a decoder raised: the error goes
    into the Result, so any executor (local or remote) treats every job alike
    and a worker never dies of a file.
    """

    recipe: Recipe
    plan: object  # outputs.OutputPlan (imported lazily: it pulls in numpy and Numba)
    jobs: int = 1  # in the whole run: whether Numba's start-up pays depends on it (see _backend)

    def __call__(self, job: Job) -> Result:
        from .._backend import expect_repeats
        from ..messages import error_message
        from ..outputs import process

        expect_repeats(self.jobs)  # here, since the work may run in another process

        start = time.perf_counter()
        buffer = _io.BytesIO()
        warnings: list[str] = []
        try:
            written = process(job.source, self.recipe, self.plan, buffer, subfolder=job.subfolder,
                              index=job.index, data=job.data, warnings=warnings, stem=job.stem)
        except Exception as exc:  # noqa: BLE001 - one file's failure, whatever raised it, is that file's
            reason = error_message(exc)
            return Result(job.index, job.source, "failed", seconds=time.perf_counter() - start,
                          error=reason, detail=getattr(exc, "detail", None) or reason)
        return Result(job.index, job.source, "processed", [w.path for w in written],
                      [tuple(w.shape) for w in written], time.perf_counter() - start, None, buffer.getvalue(),
                      warnings=warnings)

    def anchored(self, folder: str) -> "Work":
        """The same work with relative paths resolved against ``folder``, to run in another
        working folder (a cluster's workers); results still name the paths as given."""
        return replace(self, plan=replace(self.plan, root=folder))

    def warm(self) -> None:
        """Load (or compile) the Numba kernels this recipe will use, so forked workers start warm.

        A tiny image stands in for the run's images: counted as that many photos
        (640x480), it gets the kernels the real images will get, Numba's or numpy's.
        """
        import numpy as np

        from .. import _backend, pipeline
        from ..outputs import model_run

        if model_run(self.recipe):
            self.recipe.warm()
            return
        size = 16
        _backend.expect_repeats(self.jobs * (640 * 480) // (size * size))
        try:
            pipeline.run(np.zeros((size, size, 3), np.float32), self.recipe)
        except ValueError:  # e.g. a VALID window larger than the tiny image: nothing to warm
            pass
        finally:
            _backend.expect_repeats(self.jobs)


class Executor:
    """Where the per-file work of a batch runs: a context manager that runs ``work`` over ``jobs``.

    An executor runs a picklable ``work(job) -> Result`` callable on every job
    and yields the results as they finish. It never decides what to do (the
    planner did) and never prints (the driver does). ``work`` never raises for
    a bad input, so an exception out of an executor means the run itself is in
    trouble (Ctrl-C, a lost worker pool).

    ``map_unordered`` yields exactly one Result per job, in any order. The
    driver may stop iterating early (``--fail-fast``) or be interrupted
    (Ctrl-C): ``__exit__`` (and closing the generator) must then cancel what
    has not finished. Outputs are written atomically by ``work`` itself, so a
    job that is killed half-way leaves no partial file, and a job run twice (a
    retry elsewhere) writes the same bytes. Executors live in
    :mod:`convfilter.batch.executors` (local) and
    :mod:`convfilter.batch.dask_executor` (a Dask cluster).
    """

    def map_unordered(self, work, jobs):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None
