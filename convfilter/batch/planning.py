"""Step 2 of a batch: predict every job's outputs and decide, before any work, what not to run.

Deciding up front which jobs are skipped (``--skip-existing``) or refused (an
output would overwrite an input, or another job's output) keeps the result
independent of ``--jobs`` and of the executor.
"""

from __future__ import annotations

import os
from dataclasses import replace

from ..recipe import Recipe
from ..messages import STDIO as STDIN
from ..messages import display_name
from .jobs import BatchOptions, Job, Result


def plan_jobs(jobs: list[Job], recipe: Recipe, plan, options: BatchOptions) -> tuple[list[Job], list[Result]]:
    """Jobs to run (with predicted outputs), and the results decided without running.

    A job is refused when one of its outputs is an input of the run, an
    output of an earlier job, or outside the output folder (through a
    symbolic link; see ``OutputPlan.check_inside``); with ``skip_existing``
    it is skipped when all its outputs exist already. With the default names,
    inputs that share a stem in one folder (``hopper.bmp``, ``hopper.png``) are
    named after their whole file name instead (``hopper.bmp_sobel-x.png``), so
    that neither is refused.
    """
    inputs = {os.path.realpath(j.source) for j in jobs if j.source != STDIN}
    remedy = "choose another -o" if plan.target is not None else "choose another -o or --name"
    stems = _whole_names_for_shared_stems(jobs) if options.name is None and plan.target is None else {}
    claimed: dict[str, str] = {}
    todo, decided = [], []
    for job in jobs:
        job = replace(job, stem=stems.get(job.index))
        outputs = plan.outputs_for(recipe, job.source, job.subfolder, job.index, job.stem)
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
                           + _clash_remedy(job.source, claimed[real], options))
            if problem:
                break
        if problem:
            decided.append(Result(job.index, job.source, "failed", error=problem))
            continue
        claimed.update((os.path.realpath(path), job.source) for path in outputs)
        if options.skip_existing and outputs and all(os.path.exists(p) for p in outputs):
            decided.append(Result(job.index, job.source, "skipped", list(outputs)))
            continue
        todo.append(replace(job, outputs=tuple(outputs)))
    return todo, decided


def _whole_names_for_shared_stems(jobs: list[Job]) -> dict[int, str]:
    """``{job index: its whole file name}`` for inputs whose default names would clash only
    because they share a stem in one (output) folder: ``hopper.bmp`` and ``hopper.png``."""
    from ..io import name_of, stem_of

    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.subfolder, stem_of(job.source)), []).append(job)
    stems = {}
    for group in groups.values():
        if len({name_of(job.source) for job in group}) > 1:
            stems.update((job.index, name_of(job.source)) for job in group)
    return stems


def _clash_remedy(source: str, other: str, options: BatchOptions) -> str:
    """How to give two inputs different output names."""
    from ..io import name_of

    ways = []
    if name_of(source) != name_of(other):
        ways.append("put {name} (the whole file name) in --name, e.g. --name '{name}_{kernel}.{ext}'")
    elif not options.recursive:
        ways.append("use their folder as the input with -r (sub-folders are mirrored)")
    ways.append("put {index} in --name")
    return " or ".join(ways)
