"""Many inputs through one recipe: find the images, plan the outputs, run the jobs, report.

A run goes through four steps, each in a module named for it:

1. :mod:`.inputs` turns files, folders, ``-`` and ``--from-list`` into a
   list of :class:`~.jobs.Job` (folders give the images in them, in name
   order; files convfilter wrote are left out unless asked).
2. :mod:`.planning` predicts every job's output paths and decides, before
   any work, which jobs are skipped (``--skip-existing``) or refused (an
   output would overwrite an input, or another job's output). Deciding this
   up front keeps the result independent of ``--jobs``.
3. An executor (:mod:`.executors`, :mod:`.dask_executor`) runs
   :class:`~.jobs.Work` on each job (in this process, in worker processes,
   or on a Dask cluster) and yields a :class:`~.jobs.Result` per job.
4. :func:`.driver.run_batch` shows progress, errors and the summary
   (:mod:`.console`), writes stdout data in input order and the ``--report``
   (:mod:`.report`), and returns the counts.

:func:`run` (in :mod:`.driver`) strings the four together for ``apply`` and
``pool``; :mod:`.threads` keeps ``--jobs N`` to N CPUs. The shared types and
errors live in :mod:`.jobs`, which imports none of the others. Importing the
package is cheap (no numpy).
"""

from .driver import run, run_batch
from .jobs import BatchOptions, Job, Result, RunProblem, SetupProblem, UsageProblem, Work

__all__ = ["BatchOptions", "Job", "Result", "RunProblem", "SetupProblem", "UsageProblem", "Work", "run",
           "run_batch"]
