"""Step 2 of a batch: predict every job's outputs and decide, before any work, what not to run.

Deciding up front which jobs are skipped (``--skip-existing``) or refused (an
output would overwrite an input, or another job's output) keeps the result
independent of ``--jobs`` and of the executor.
"""

from __future__ import annotations

import os

from ..recipe import Recipe
from ..messages import STDIO as STDIN
from ..messages import display_name
from .jobs import BatchOptions, Job, Result
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
