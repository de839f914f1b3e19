"""The threads a convolution or pool runs on: one count, one pool, and the BLAS library kept in step.

The kernels (Numba's, or their numpy twins) release the GIL and work on bands
of output rows, so plain threads run them in parallel; so do the matrix-product paths, whose numpy
copies and BLAS calls release it too. Work below :data:`MIN_PARALLEL_WORK`
multiply-adds (or cells) stays on the calling thread: starting threads costs
more than it saves there. Larger work is shared by the calling thread and
count - 1 band threads, each pinned to another CPU.

BLAS (numpy's OpenBLAS, MKL, ...) brings a thread pool of its own. While a
call runs its bands here, BLAS is held to one thread, so that the count set
by :func:`set_num_threads` (or ``CONVFILTER_NUM_THREADS``) is the number of
busy threads for both: batch workers that call ``set_num_threads(1)`` stay
single-threaded in BLAS too, and two bands never start two BLAS pools.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import threading
from typing import Callable, NamedTuple

from .system import usable_cpus

__all__ = ["set_num_threads", "get_num_threads", "run_bands", "single_threaded_blas", "MIN_PARALLEL_WORK"]

# Work from this many multiply-adds (two bands' worth) runs on threads. With the caller taking
# bands beside the band threads, from 10 million instead of 20 (medians of 12 alternating rounds
# in one process, 20 million against 10: 28x28x128 * 1x1x128x128 0.45 -> 0.37 ms, 56x56x64 *
# 1x1x64x64 0.46 -> 0.39; while one CPU was slowed by another load, 7x7x128 * 7x7x128x128 with
# stride 2 0.46 -> 0.38 and 224x224x16 * 1x1x16x16 0.52 -> 0.44; the other calls of 10-20
# million level).
MIN_PARALLEL_WORK = 10_000_000
_threads: int | None = None
_helpers: list[_Helper] = []  # the band threads, started on first use
_helpers_lock = threading.Lock()


class _Helper(NamedTuple):
    cpu: int | None  # the CPU it is pinned to
    jobs: queue.SimpleQueue


def _forget_helpers() -> None:
    """In a forked child the parent's band threads do not exist: start fresh ones when needed
    (and read the default thread count again: a server's child takes its client's environment)."""
    global _helpers_lock, _default_count
    _helpers_lock = threading.Lock()
    _helpers.clear()
    _default_count = None


def _serve(jobs: queue.SimpleQueue, cpu: int | None) -> None:
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})  # this thread only
        except OSError:  # the CPU was taken away meanwhile: run anywhere
            pass
    while (job := jobs.get()) is not None:
        job()


def _pool(size: int) -> list[_Helper]:
    """``size`` band threads, each pinned to one of the CPUs this process may use when there are
    enough of them.

    Pinned, because a thread woken after a pause lands on the CPU of the thread that woke it: on
    the 2-vCPU machine the caller and the band thread then shared one CPU for the next 50-100 ms
    of calls, which ran at one thread's speed (``1x112x112x64 * 3x3x64x64``: 3.7-4.1 ms back to
    back, 5.6-6.9 ms after a 0.2-1 s pause; pinned, 3.8-4.4 ms after any pause)."""
    with _helpers_lock:
        if len(_helpers) != size:
            for helper in _helpers:
                helper.jobs.put(None)  # it ends after the jobs it already has
            _helpers.clear()
            cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
            for index in range(size):
                cpu = cpus[index] if len(cpus) >= size else None
                helper = _Helper(cpu, queue.SimpleQueue())
                threading.Thread(target=_serve, args=(helper.jobs, cpu), name=f"convfilter-{index}",
                                 daemon=True).start()
                _helpers.append(helper)
        return list(_helpers)


_getcpu = None  # the C library's sched_getcpu, looked up on first use (False: there is none)


def _current_cpu() -> int | None:
    """The CPU the calling thread runs on (None where the C library cannot say)."""
    global _getcpu
    if _getcpu is None:
        try:
            import ctypes

            _getcpu = ctypes.CDLL(None).sched_getcpu
        except (OSError, AttributeError):
            _getcpu = False
    cpu = _getcpu() if _getcpu else -1
    return cpu if cpu >= 0 else None


def _helpers_beside_caller(count: int, wanted: int) -> list[_Helper]:
    """``wanted`` of the ``count`` band threads, leaving out the one pinned to the caller's CPU:
    the caller takes bands too, and a band thread on its CPU would take turns with it."""
    here = _current_cpu()
    return [helper for helper in _pool(count) if helper.cpu is None or helper.cpu != here][:wanted]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


# The default thread count, read from the environment and the CPUs this process may use when a
# call first needs it: each call asks for it, and reading them took 3.5 us, 3% of a small call.
_default_count: int | None = None


def _default_threads() -> int:
    global _default_count
    if _default_count is None:
        env = os.environ.get("CONVFILTER_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
        _default_count = int(env) if env and env.strip().isdigit() and int(env) >= 1 else usable_cpus()
    return _default_count


def set_num_threads(count: int | None) -> None:
    """Use at most ``count`` threads per call (None: every available CPU).

    Batch workers that already run one process per CPU call
    ``set_num_threads(1)`` so they never oversubscribe. The environment
    variables ``CONVFILTER_NUM_THREADS`` or ``NUMBA_NUM_THREADS`` set the
    default, read at the first call that needs it (and again after
    ``set_num_threads(None)``, and in a forked child). The count covers the
    BLAS calls of the matrix-product paths as well: BLAS runs on one thread
    inside each band.
    """
    global _threads, _default_count
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"thread count must be a whole number >= 1 or None, got {count!r}")
    _threads = count
    if count is None:
        _default_count = None


def get_num_threads() -> int:
    """The number of threads a large call uses."""
    return _threads if _threads is not None else _default_threads()


# --- BLAS ------------------------------------------------------------------------------------
# threadpoolctl finds the BLAS libraries the process loaded (OpenBLAS, MKL, BLIS; numpy's, and
# e.g. SciPy's own copy) and sets their thread counts through each library's own call. Looking the
# libraries up costs milliseconds, so it is done again only after modules were imported since
# the last look (one of them may have loaded another BLAS); setting the count is one C call.
#
# OpenBLAS on its own threads is called directly, not through threadpoolctl: threadpoolctl (3.8)
# lets only one Python thread set its count, the first that did, while that thread lives, and
# ignores the others. A conv2d called from any other thread (a Dask worker's, a user's pool)
# then ran its bands with BLAS on all its threads, two BLAS pools on two CPUs.

_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved: list[tuple[BlasLibrary, int]] | None = None
_blas_libraries: list[BlasLibrary] | None = None
_blas_modules = 0  # len(sys.modules) when the libraries were looked up


class BlasLibrary(NamedTuple):
    """One BLAS library the process loaded: its kind and its thread count's getter and setter."""

    internal_api: str  # "openblas", "mkl", "blis"
    get_num_threads: Callable[[], int]
    set_num_threads: Callable[[int], object]


def _library(controller) -> BlasLibrary:
    """The library behind a threadpoolctl controller, with OpenBLAS's own calls where it runs
    on threads of its own (see above); any other library through the controller."""
    if controller.internal_api == "openblas" and getattr(controller, "threading_layer", "") != "openmp":
        dynlib = getattr(controller, "dynlib", None)
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return BlasLibrary("openblas", get, put)
    return BlasLibrary(controller.internal_api, controller.get_num_threads, controller.set_num_threads)


def _blas_controllers() -> list[BlasLibrary]:
    global _blas_libraries, _blas_modules
    if _blas_libraries is None or _blas_modules != len(sys.modules):
        _blas_modules = len(sys.modules)
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # without it BLAS keeps its own threads: slower with several bands, not wrong
            _blas_libraries = []
        else:
            _blas_libraries = [_library(lib) for lib in ThreadpoolController().lib_controllers
                               if lib.user_api == "blas"]
            _blas_modules = len(sys.modules)  # threadpoolctl's own imports count as seen
    return _blas_libraries


# OpenBLAS runs a product of at most this many multiply-adds (m * n * k) on one thread of its own
# accord (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD in its gemm interface; checked: of 2480
# random products up to this size none gave other bits on two threads than on one, above it 154
# of 1021 did), so a call no larger need not pay for holding it to one (8 us of a 77 us call).
OPENBLAS_SERIAL_WORK = 65536 * 4


def blas_serial_anyway(work: float) -> bool:
    """True when every BLAS library loaded is OpenBLAS and products of ``work`` multiply-adds
    run on one thread there whatever its thread count."""
    return work <= OPENBLAS_SERIAL_WORK and all(lib.internal_api == "openblas" for lib in _blas_controllers())


@contextlib.contextmanager
def single_threaded_blas():
    """Hold every BLAS library at one thread inside the block (and restore the count after it).

    Re-entrant and shared between threads: the first caller in saves the
    counts, the last one out restores them.
    """
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = []
            for lib in _blas_controllers():
                count = lib.get_num_threads()
                if count != 1:
                    lib.set_num_threads(1)
                    _blas_saved.append((lib, count))
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib, count in _blas_saved:
                    lib.set_num_threads(count)
                _blas_saved = None


def _forget_blas_users() -> None:
    """A forked child has none of its parent's other threads inside a block: start counting afresh."""
    global _blas_users, _blas_saved, _blas_lock
    _blas_lock = threading.Lock()
    if _blas_users:
        for lib, count in _blas_saved or ():
            lib.set_num_threads(count)
    _blas_users, _blas_saved = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_blas_users)


# --- bands -----------------------------------------------------------------------------------


# Bands per call: a band holds about MIN_PARALLEL_WORK / BANDS_PER_MINIMUM units of work, and a
# call has at most MAX_BANDS of them. More bands than threads, handed out as threads come free,
# keep every thread busy when another process takes part of a CPU (two equal halves on two
# CPUs wait for the slower one: measured 0.7x TensorFlow's speed on a shared machine); the
# bands depend on the work only, not on the thread count, so the result's bits do not either.
# An odd count of bands of several rows is made even, one band fewer: on two threads (or four)
# an odd band out leaves a thread idle while the other finishes it (1x56x56x128 * 1x1x128x256,
# whose bands of at least one 512-pixel tile were five: 1.71 -> 1.53 ms in four, medians of 3
# alternating rounds).
BANDS_PER_MINIMUM = 2  # bands of about 5 million multiply-adds
MAX_BANDS = 32


def band_work() -> float:
    """The work of a band (see :data:`BANDS_PER_MINIMUM`): a call of at most this much work is
    one band."""
    return MIN_PARALLEL_WORK / BANDS_PER_MINIMUM


def band_edges(rows: int, work: float, min_rows: int = 1) -> list[int]:
    """The first row of each band and the end: the same for every thread count. Bands have at
    least ``min_rows`` rows where that still leaves two bands."""
    per_band = band_work()
    count = rows if per_band <= 0 else -(-int(work) // max(1, int(per_band)))
    count = max(1, min(rows, MAX_BANDS, count, max(2, rows // max(1, min_rows))))
    if 2 < count < rows and count % 2:
        count -= 1
    return [rows * t // count for t in range(count + 1)]


def run_bands(kernel, args, rows: int, work: float, blas: bool = False, min_rows: int = 1,
              slowness: float = 1.0) -> None:
    """Run ``kernel(*args, row_start, row_stop)`` over the bands of ``rows`` output rows (see
    :func:`band_edges`, with ``min_rows``), on several threads when there is enough ``work``
    (times ``slowness``, the kernel's time per unit of work against a matrix product's
    multiply-add, which :data:`MIN_PARALLEL_WORK` counts). A
    kernel given by name is Numba's or its numpy twin, chosen for this ``work`` by
    :func:`convfilter._backend.kernel`. With ``blas`` the kernel calls BLAS, which is then held
    to one thread per band (see :func:`single_threaded_blas`), unless its products are too small
    for BLAS to thread (:func:`blas_serial_anyway`)."""
    if isinstance(kernel, str):
        from . import _backend

        kernel = _backend.kernel(kernel, work)
    if work <= band_work() and (not blas or blas_serial_anyway(work)):
        # one band (band_edges' count for this work), on this thread: a small call (a 7x7 map's,
        # 100 us in all) saves the few microseconds of the bands' bookkeeping
        kernel(*args, 0, rows)
        return
    edges = band_edges(rows, work, min_rows)
    bands = list(zip(edges, edges[1:]))
    count = get_num_threads()
    threads = min(count, len(bands))
    with single_threaded_blas() if blas and not blas_serial_anyway(work) else contextlib.nullcontext():
        if threads <= 1 or work * slowness < MIN_PARALLEL_WORK:
            for lo, hi in bands:
                kernel(*args, lo, hi)
            return
        # the caller takes bands, beside threads - 1 band threads on the other CPUs: it starts at
        # once, while they wake (30-60 us each way on the 2-vCPU machine), and waits only for
        # the bands they are still running when it has none left to take
        pending = iter(bands)
        done = threading.Condition()
        left, failures = len(bands), []

        def take_bands() -> None:
            nonlocal left
            while True:
                with done:
                    band = None if failures else next(pending, None)
                if band is None:
                    return
                try:
                    kernel(*args, *band)
                except BaseException as error:  # the others take no new band; the caller raises it
                    with done:
                        failures.append(error)
                        done.notify_all()
                    return
                with done:
                    left -= 1
                    if not left:
                        done.notify_all()

        for helper in _helpers_beside_caller(count, threads - 1):
            helper.jobs.put(take_bands)
        try:
            take_bands()
            with done:
                while left and not failures:
                    done.wait()
        except BaseException:  # Ctrl-C: the others take no new band
            with done:
                for _ in pending:
                    pass
            raise
        if failures:
            raise failures[0]
