"""The whole run of ``apply`` and ``pool``: the batch's steps strung together.

:func:`run` finds the inputs (:mod:`.inputs`), plans the outputs
(:mod:`.planning`), chooses an executor (:mod:`.executors`) and hands all
to :func:`run_batch`, which runs the jobs, shows progress and errors
(:mod:`.console`) and keeps the record (:mod:`.report`). Importing this
module is cheap (no numpy): numpy, Pillow and Numba load inside the
functions that need them, after :func:`~.threads.limit_threads` has had its say.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

from ..recipe import DEFAULT_MAX_PIXELS, Recipe, View
from ..system import usable_cpus
from .console import Console, is_terminal
from .executors import make_executor
from .inputs import Expansion, expand_inputs
from .jobs import BatchOptions, Job, Result, UsageProblem, Work
from .planning import plan_jobs
from .report import OrderedOutput, Summary, open_report
from .threads import limit_threads


def run_batch(work: Work, expansion: Expansion, todo: list[Job], decided: list[Result], executor,
              options: BatchOptions, stdout=None) -> Summary:
    """Run ``todo`` on ``executor``, reporting as results arrive; return the counts.

    Raises whatever interrupts the run (KeyboardInterrupt...) after closing the
    report; the executor stops its workers on the way out.
    """
    stdout = stdout if stdout is not None else sys.stdout.buffer
    early = expansion.failures + decided
    total = len(early) + len(todo)
    console = Console(options.verbosity, expansion.from_folders or total > 1, total,
                      outputs=sum(len(job.outputs) for job in todo))
    summary = Summary()
    for path, why in expansion.left_out:
        summary.left_out[why] = summary.left_out.get(why, 0) + 1
        if options.verbosity > 0:
            console.note(f"left out {path} ({why})")
    report = open_report(options.report) if options.report else None
    emitter = OrderedOutput([job.index for job in todo], stdout)

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


def run(recipe: Recipe, arguments: list[str], output: str | None, fmt: str | None, normalization: str | None,
        options: BatchOptions, executor=None, *, view: View = View(),
        max_pixels: int = DEFAULT_MAX_PIXELS, accept_truncated: bool = False) -> Summary:
    """Everything ``apply`` and ``pool`` do after parsing their options.

    Raises UsageProblem for options that cannot work, SetupProblem when the
    cluster of ``options.scheduler`` cannot be used (both before any output is
    written). ``executor`` defaults to that cluster, else worker processes for
    ``options.jobs`` (or this process when one is enough). ``accept_truncated`` reads
    truncated images as far as they go, with a warning (see :func:`convfilter.io.load`).
    """
    if options.scheduler and options.jobs:
        raise UsageProblem("--jobs sets local worker processes; with --scheduler the cluster's workers "
                           "run the jobs (size the cluster instead)")
    workers = 1 if options.scheduler else options.jobs or usable_cpus()
    several = bool(options.from_list) or len(arguments) > 1 or any(os.path.isdir(a) for a in arguments)
    if workers > 1 and several:  # decided before numpy and Numba load; one input keeps their threads
        limit_threads()
    from .._numba_cache import skip_scipy_blas_probe

    skip_scipy_blas_probe()  # if Numba loads a kernel later; this process is the CLI's alone
    from ..io import set_max_pixels
    from ..outputs import OutputPlan

    set_max_pixels(max_pixels)  # this process opens files too (finding images and earlier outputs)
    _check_output(output, fmt)  # before any input is read
    expansion = expand_inputs(arguments, options)
    try:
        plan = OutputPlan.make(recipe, [job.source for job in expansion.jobs] or ["-"], output, fmt,
                               normalization, options.name, view, max_pixels)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    plan = replace(plan, accept_truncated=accept_truncated)
    todo, decided = plan_jobs(expansion.jobs, recipe, plan, options)
    if executor is None:  # a cluster connects now: no report or output before that works
        executor = make_executor(min(workers, len(todo)), options.scheduler)
    # the workers share the memory: each one's check allows its share only
    work = Work(recipe, replace(plan, workers=max(getattr(executor, "workers", 1), 1)), len(todo))
    return run_batch(work, expansion, todo, decided, executor, options)


def _check_output(output: str | None, fmt: str | None) -> None:
    """Raise UsageProblem for an ``-o`` that names neither a folder nor a file, or for binary data
    bound for a terminal (``-o -`` on an interactive stdout: redirect or pipe it, as gzip asks)."""
    from ..formats import DEFAULT_FORMAT, FORMATS
    from ..outputs import output_kind

    try:
        kind = output_kind(output)
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    if kind == "stdout" and is_terminal(sys.stdout):
        fmt = fmt or DEFAULT_FORMAT
        raise UsageProblem(f"-o - writes binary {fmt} data, and stdout is a terminal; redirect it "
                           f"(> out.{FORMATS[fmt].extension}), pipe it (| convfilter pool - ...), or give -o a "
                           "file name")
