"""Thread policy of a batch: one CPU's worth of threads per worker, so ``--jobs N`` uses N CPUs.

The environment is set before numpy and Numba load in this process (their
thread pools read it once); workers then make convfilter's own kernel threads
single as they start.
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads() -> None:
    """One thread per worker process, so ``--jobs N`` uses N CPUs and never more.

    Set before numpy and Numba are imported (their thread pools read these
    once); a value the user set is kept.
    """
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")


def single_threaded_kernels() -> None:
    """One thread per worker: the kernels' row bands would otherwise multiply threads by the workers.

    The kernels run their bands on convfilter's own threads (not Numba's parallel
    backend), so the count to set is :func:`convfilter.ops.set_num_threads`.
    """
    from .. import ops

    ops.set_num_threads(1)
