"""Many inputs through one recipe: find the images, plan the outputs, run the jobs, report.

A run goes through four steps, each a function here:

1. :func:`expand_inputs` turns files, folders, ``-`` and ``--from-list``
   into a list of :class:`Job` (folders give the images in them, in name
   order; files convfilter wrote are left out unless asked).
2. :func:`plan_jobs` predicts every job's output paths and decides, before
   any work, which jobs are skipped (``--skip-existing``) or refused (an
   output would overwrite an input, or another job's output). Deciding this
   up front keeps the result independent of ``--jobs``.
3. An :class:`~convfilter.executors.Executor` runs :class:`Work` on each job
   (in this process, in worker processes, or elsewhere) and yields a
   :class:`Result` per job.
4. :func:`run_batch` shows progress, errors and the summary, writes the
   ``--report`` and returns the counts.

:func:`run` strings the four together for ``apply`` and ``pool``. Importing
this module is cheap (no numpy): numpy, Pillow and Numba load inside the
functions that need them, after :func:`limit_threads` has had its say.
"""

from __future__ import annotations

import io as _io
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace

from .recipe import DEFAULT_MAX_PIXELS, Recipe, View

STDIN = "-"
IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".dib", ".gif", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".npy",
})


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
    the output folder; ``data`` holds stdin's bytes for ``-``.
    """

    index: int
    source: str
    subfolder: str = ""
    data: bytes | None = field(default=None, repr=False)
    outputs: tuple[str, ...] = ()


@dataclass
class Result:
    """What became of one job. ``status`` is processed, failed or skipped."""

    index: int
    source: str
    status: str
    outputs: list[str] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    stdout: bytes = b""  # data for stdout (a map with -o -, or global pool values), written in input order

    def report_line(self) -> str:
        return json.dumps({
            "path": display_name(self.source), "status": self.status, "outputs": self.outputs,
            "shapes": [list(s) for s in self.shapes], "seconds": round(self.seconds, 6), "error": self.error,
        })


@dataclass(frozen=True)
class Work:
    """The per-file work of a run: a picklable callable ``Work(recipe, plan)(job) -> Result``.

    It never raises for a bad input: the error goes into the Result, so any
    executor (local or remote) treats every job alike.
    """

    recipe: Recipe
    plan: object  # runner.OutputPlan (imported lazily: it pulls in numpy and Numba)

    def __call__(self, job: Job) -> Result:
        from .runner import error_message, process

        start = time.perf_counter()
        buffer = _io.BytesIO()
        try:
            written = process(job.source, self.recipe, self.plan, buffer, subfolder=job.subfolder,
                              index=job.index, data=job.data)
        except (ValueError, OSError, MemoryError) as exc:
            return Result(job.index, job.source, "failed", seconds=time.perf_counter() - start,
                          error=error_message(exc))
        return Result(job.index, job.source, "processed", [w.path for w in written],
                      [tuple(w.shape) for w in written], time.perf_counter() - start, None, buffer.getvalue())

    def anchored(self, folder: str) -> "Work":
        """The same work with relative paths resolved against ``folder``, to run in another
        working folder (a cluster's workers); results still name the paths as given."""
        return replace(self, plan=replace(self.plan, root=folder))

    def warm(self) -> None:
        """Load (or compile) the kernels this recipe uses, so forked workers start warm."""
        import numpy as np

        from . import pipeline

        try:
            pipeline.run(np.zeros((16, 16, 3), np.float32), self.recipe)
        except ValueError:  # e.g. a VALID window larger than the tiny image: nothing to warm
            pass


def display_name(source: str) -> str:
    return "stdin" if source == STDIN else source


# --- 1. inputs -------------------------------------------------------------------------------


@dataclass
class Expansion:
    """The jobs found, and inputs that failed before any work (e.g. an empty folder)."""

    jobs: list[Job]
    failures: list[Result]
    from_folders: bool  # any folder or list given: the run reports like a batch


def read_list(path: str, stdin=None) -> list[str]:
    """Paths from ``--from-list``: one per line, or NUL-separated (``find -print0``)."""
    if path == STDIN:
        raw = (stdin if stdin is not None else sys.stdin.buffer).read()
    else:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise UsageProblem(f"--from-list '{path}': {exc.strerror.lower() if exc.strerror else exc}") from None
    text = os.fsdecode(raw)
    entries = text.split("\0") if "\0" in text else text.splitlines()
    return [entry for entry in entries if entry.strip()]


def expand_inputs(arguments: list[str], options: BatchOptions, stdin=None) -> Expansion:
    """Jobs for files, folders and ``-`` (plus ``--from-list``), in the order given.

    A folder gives its images (known extensions, or content Pillow
    recognises) sorted by name, descending with ``recursive``; hidden files,
    non-images and (unless ``include_outputs``) files convfilter wrote are
    left out. A folder without images is a failed input. Files named
    explicitly are always taken.
    """
    from .io import read_source

    listed = read_list(options.from_list, stdin) if options.from_list else []
    if (list(arguments) + listed).count(STDIN) + (options.from_list == STDIN) > 1:
        raise UsageProblem("stdin ('-' or --from-list -) can be used only once")
    if not arguments and not listed:
        raise UsageProblem("give at least one INPUT (a file, a folder or '-'), or --from-list")
    entries: list[tuple[str, str, bytes | None]] = []  # (source, subfolder, data)
    failures: list[Result] = []
    from_folders = bool(options.from_list)
    for position, argument in enumerate(list(arguments) + listed):
        if argument == STDIN:
            entries.append((STDIN, "", read_source(STDIN, stdin)))
        elif os.path.isdir(argument):
            from_folders = True
            found, outputs_seen = _images_in(argument, options)
            if not found:
                failures.append(Result(-1, argument, "failed", error=_no_images(argument, options, outputs_seen)))
            entries.extend((path, sub, None) for path, sub in found)
        elif position >= len(arguments) and os.path.isfile(argument) and not _wanted(argument, options):
            continue  # a listed file is filtered as a folder's files are
        else:
            entries.append((argument, "", None))
    jobs = [Job(index, source, sub, data) for index, (source, sub, data) in enumerate(entries)]
    return Expansion(jobs, failures, from_folders)


def _images_in(folder: str, options: BatchOptions) -> tuple[list[tuple[str, str]], int]:
    """(path, subfolder) of the images under ``folder``, and how many of our outputs were left out."""
    from .io import written_by_convfilter

    found: list[tuple[str, str]] = []
    outputs_seen = 0
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if options.recursive else []
        subfolder = os.path.relpath(top, folder)
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.startswith(".") or not os.path.isfile(path) or not _is_image(path):
                continue
            if not options.include_outputs and written_by_convfilter(path):
                outputs_seen += 1
                continue
            found.append((path, "" if subfolder == "." else subfolder))
    return found, outputs_seen


def _wanted(path: str, options: BatchOptions) -> bool:
    """An image that is not convfilter's own output (unless outputs are wanted too)."""
    from .io import written_by_convfilter

    if not _is_image(path):
        return False
    return options.include_outputs or not written_by_convfilter(path)


def _no_images(folder: str, options: BatchOptions, outputs_seen: int) -> str:
    hints = []
    if not options.recursive and any(entry.is_dir() for entry in os.scandir(folder)):
        hints.append("-r looks in sub-folders")
    if outputs_seen:
        hints.append(f"{outputs_seen} files written by convfilter were left out (--include-outputs takes them)")
    return "; ".join(["no images in this folder"] + hints)


def _is_image(path: str) -> bool:
    """A known image extension, or content Pillow recognises (a quick look at the header)."""
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return True
    from PIL import Image

    from .io import quiet_pillow

    try:
        with quiet_pillow(), Image.open(path):
            return True
    except Exception:  # Pillow raises many kinds for non-images; none of them matters here
        return False


# --- 2. planning -----------------------------------------------------------------------------


def plan_jobs(jobs: list[Job], recipe: Recipe, plan, options: BatchOptions) -> tuple[list[Job], list[Result]]:
    """Jobs to run (with predicted outputs), and the results decided without running.

    A job is refused when one of its outputs is an input of the run, an
    output of an earlier job, or outside the output folder (through a
    symbolic link; see ``OutputPlan.check_inside``); with ``skip_existing``
    it is skipped when all its outputs exist already.
    """
    inputs = {os.path.realpath(j.source) for j in jobs if j.source != STDIN}
    remedy = "choose another -o" if plan.target is not None else "choose another -o or --name"
    claimed: dict[str, str] = {}
    todo, decided = [], []
    for job in jobs:
        outputs = plan.outputs_for(recipe, job.source, job.subfolder, job.index)
        problem = None
        for path in outputs:
            real = os.path.realpath(path)
            try:
                plan.check_inside(path)
            except ValueError as exc:
                problem = str(exc)
                break
            if real in inputs:
                problem = f"the output '{path}' would overwrite an input; {remedy}"
            elif real in claimed:
                problem = (f"the output '{path}' is also the output of '{display_name(claimed[real])}'; "
                           "use a folder input with -r (sub-folders are mirrored) or {index} in --name")
            if problem:
                break
        if problem:
            decided.append(Result(job.index, job.source, "failed", error=problem))
            continue
        claimed.update((os.path.realpath(path), job.source) for path in outputs)
        if options.skip_existing and outputs and all(os.path.exists(p) for p in outputs):
            decided.append(Result(job.index, job.source, "skipped", list(outputs)))
            continue
        todo.append(Job(job.index, job.source, job.subfolder, job.data, tuple(outputs)))
    return todo, decided


# --- 4. running and reporting ----------------------------------------------------------------


@dataclass
class Summary:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    not_run: int = 0

    def line(self) -> str:
        return f"processed {self.processed}, failed {self.failed}, skipped {self.skipped}"


class Console:
    """Messages on stderr, by verbosity, around an optional progress bar.

    Quiet (-1) shows errors only; normal (0) shows what a single input wrote,
    or a batch's progress bar (on a terminal) and summary; verbose (1) also
    names every file written or skipped.
    """

    def __init__(self, verbosity: int, batch: bool, total: int, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.verbosity = verbosity
        self.batch = batch
        show_bar = batch and verbosity >= 0 and total > 1 and _is_terminal(self.stream)
        self.progress = Progress(total, self.stream) if show_bar else None

    def error(self, source: str, message: str) -> None:
        self._say(f"Error: {display_name(source)}: {message}")

    def result(self, result: Result) -> None:
        if result.status == "failed":
            self.error(result.source, result.error or "failed")
        elif self.verbosity > 0 or (self.verbosity == 0 and not self.batch):
            verb = "skipped (exists)" if result.status == "skipped" else "wrote"
            for path in result.outputs:
                self._say(f"{verb} {path}")
        if self.progress is not None:
            self.progress.advance()

    def note(self, text: str) -> None:
        if self.verbosity >= 0:
            self._say(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.clear()
            self.progress = None

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.progress is not None:
            self.progress.draw()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line progress bar with count, rate and ETA, redrawn at most 10 times a second."""

    def __init__(self, total: int, stream, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.start = time.monotonic()
        self.last_draw = 0.0

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last_draw >= 0.1 or self.done == self.total:
            self.draw(now)

    def draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.last_draw = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        filled = self.width * self.done // max(self.total, 1)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"{rate:.1f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def usable_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def run_batch(work: Work, expansion: Expansion, todo: list[Job], decided: list[Result], executor,
              options: BatchOptions, stdout=None) -> Summary:
    """Run ``todo`` on ``executor``, reporting as results arrive; return the counts.

    Raises whatever interrupts the run (KeyboardInterrupt...) after closing the
    report; the executor stops its workers on the way out.
    """
    stdout = stdout if stdout is not None else sys.stdout.buffer
    early = expansion.failures + decided
    total = len(early) + len(todo)
    console = Console(options.verbosity, expansion.from_folders or total > 1, total)
    summary = Summary()
    report = _open_report(options.report) if options.report else None
    emitter = _OrderedOutput([job.index for job in todo], stdout)

    def record(result: Result) -> None:
        setattr(summary, result.status, getattr(summary, result.status) + 1)
        console.result(result)
        if report is not None:
            report.write(result.report_line() + "\n")
            report.flush()

    try:
        for result in sorted(early, key=lambda r: r.index):
            record(result)
        if not (options.fail_fast and summary.failed):
            with executor:
                for result in executor.map_unordered(work, todo):
                    emitter.done(result)  # the data first: "wrote stdout" only once it is written
                    record(result)
                    if options.fail_fast and result.status == "failed":
                        break
    except BaseException:  # interrupted: say how far the run got, then let the caller exit
        console.close()
        if console.batch:
            console.note(summary.line())
        raise
    finally:
        console.close()
        if report is not None:
            report.close()
    summary.not_run = total - summary.processed - summary.failed - summary.skipped
    if summary.not_run:
        console.note(f"stopped at the first failure (--fail-fast); {summary.not_run} inputs not run")
    if console.batch:
        console.note(summary.line())
    return summary


def _open_report(path: str):
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageProblem(f"--report '{path}': {(exc.strerror or str(exc)).lower()}") from None


class _OrderedOutput:
    """Writes each job's stdout data in input order, whatever order the jobs finish in."""

    def __init__(self, indices: list[int], stream):
        self.order = indices
        self.stream = stream
        self.position = 0
        self.ready: dict[int, bytes] = {}

    def done(self, result: Result) -> None:
        self.ready[result.index] = result.stdout
        while self.position < len(self.order) and self.order[self.position] in self.ready:
            data = self.ready.pop(self.order[self.position])
            self.position += 1
            if data:
                _write_all(self.stream, data)


def _write_all(stream, data: bytes) -> None:
    """Write every byte of ``data`` to ``stream``.

    A buffered stream may return a short count when the reader goes away
    (``| head``); loop so that the next write raises BrokenPipeError instead of
    the output being cut silently. Other failures (a full disk behind ``>``)
    stop the run with one line.
    """
    view = memoryview(data)
    try:
        while view:
            view = view[stream.write(view):]
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise RunProblem(f"stdout: {(exc.strerror or str(exc)).lower()}") from None


# --- the whole run ---------------------------------------------------------------------------


def run(recipe: Recipe, arguments: list[str], output: str | None, fmt: str | None, normalization: str | None,
        options: BatchOptions, executor=None, *, view: View = View(),
        max_pixels: int = DEFAULT_MAX_PIXELS) -> Summary:
    """Everything ``apply`` and ``pool`` do after parsing their options.

    Raises UsageProblem for options that cannot work, SetupProblem when the
    cluster of ``options.scheduler`` cannot be used (both before any output is
    written). ``executor`` defaults to that cluster, else worker processes for
    ``options.jobs`` (or this process when one is enough).
    """
    if options.scheduler and options.jobs:
        raise UsageProblem("--jobs sets local worker processes; with --scheduler the cluster's workers "
                           "run the jobs (size the cluster instead)")
    workers = 1 if options.scheduler else options.jobs or usable_cpus()
    several = bool(options.from_list) or len(arguments) > 1 or any(os.path.isdir(a) for a in arguments)
    if workers > 1 and several:  # decided before numpy and Numba load; one input keeps their threads
        limit_threads()
    from ._numba_cache import skip_scipy_blas_probe

    skip_scipy_blas_probe()  # before Numba loads a kernel; this process is the CLI's alone
    from .io import set_max_pixels
    from .runner import OutputPlan

    set_max_pixels(max_pixels)  # this process opens files too (finding images and earlier outputs)
    expansion = expand_inputs(arguments, options)
    try:
        plan = OutputPlan.make(recipe, [job.source for job in expansion.jobs] or ["-"], output, fmt,
                               normalization, options.name, view, max_pixels)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    todo, decided = plan_jobs(expansion.jobs, recipe, plan, options)
    if executor is None and options.scheduler:
        from .dask_executor import DaskExecutor

        executor = DaskExecutor(options.scheduler)  # connects now: no report or output before that works
    elif executor is None:
        from .executors import make_executor

        executor = make_executor(min(workers, len(todo)))
    # the workers share the memory: each one's check allows its share only
    work = Work(recipe, replace(plan, workers=max(getattr(executor, "workers", 1), 1)))
    return run_batch(work, expansion, todo, decided, executor, options)


THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads() -> None:
    """One thread per worker process, so ``--jobs N`` uses N CPUs and never more.

    Set before numpy and Numba are imported (their thread pools read these
    once); a value the user set is kept.
    """
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
