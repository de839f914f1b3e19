"""Which kernels run a call: Numba's compiled ones (``_jit``) or their numpy twins.

Both give the same bits (see :mod:`convfilter._numpy_kernels`), so the choice
is about time only. Numba's convolutions are 3-9x faster, but a process pays
~0.35 s to import Numba and load the first kernel from the cache, and several
seconds per kernel when the cache does not hold it yet (the first run ever,
or after an upgrade). For each call the cheaper one by a rough cost model:

    Numba: [import] + [load, or compile when not cached] + work * its speed
    numpy: work * its speed

where ``work`` is the call's count of multiply-adds (or cells), multiplied by
:func:`expect_repeats` when a caller knows that the same work will follow
(a batch of images), and the start-up costs drop to zero once paid in this
process. A caller that says nothing but calls again is taken at its word too:
the work a kernel has already done on numpy in this process counts as that
much more to come, so a loop of calls moves to Numba once numpy has cost
about as much as Numba's start-up (never more than twice the best choice).
So one photo through a short-lived process never waits for Numba, and a
large job, a batch or a loop uses it (compiling only the kernel it needs).

Whether Numba's cache holds a kernel is read from its index file without
importing Numba: the file exists in the cache folder and records the hash of
the current ``_jit.py``. (A cache from another Numba version or CPU passes
this check and then compiles; the compile notice still tells the user.)

Nothing here imports numpy or Numba at import time.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import sys
import threading

from . import _numba_cache

BACKENDS = ("auto", "numba", "numpy")

# Seconds: importing Numba, its first kernel load (type tables), each further cached kernel.
IMPORT_NUMBA, FIRST_LOAD, LOAD = 0.22, 0.13, 0.01
# Per kernel: (numpy ns per unit of work, Numba ns per unit, seconds to compile). The speeds are
# from benchmarks/bench_cold_start.py on a 2-vCPU machine, rounded up for numpy; the compile
# times are the quiet-machine figures (a loaded machine takes several times longer).
COSTS = {
    "pad_planar": (0.8, 0.45, 1.0),
    "pad_planar_phases": (1.0, 0.5, 1.0),
    "pad_planar_channel_sum": (2.0, 0.8, 0.85),
    "pad_planar_channel_sum_scaled": (6.5, 1.0, 0.9),  # numpy: a gather per sample, measured on 24 MP
    "correlate_planar": (1.0, 0.1, 5.5),
    "scale_channel": (1.5, 0.25, 0.6),  # per output float
    "correlate_separable": (1.5, 0.1, 7.0),
    "correlate_depthwise": (3.0, 0.8, 0.85),
    "max_pool": (8.0, 1.3, 0.35),
    "avg_pool": (2.0, 1.7, 0.4),
    # per transformed float (16 per 4x4 block and channel); compile times measured under load
    "winograd_input": (1.0, 0.35, 1.2),
    "winograd_output": (0.5, 0.25, 2.5),
    "winograd_filters": (0.8, 0.4, 0.7),  # per transformed float (16 per channel and filter)
    # F(2x2, 5x5)'s, per transformed float (36 per block and channel, or per channel and filter)
    "winograd5_input": (3.5, 1.0, 0.8),
    "winograd5_output": (0.6, 0.2, 2.5),
    "winograd5_filters": (2.0, 1.1, 0.9),
    "finish_rows": (1.1, 0.2, 0.5),  # per output float, with a bias and the ReLU
}
# A compile that takes longer than this says so (see set_compile_notice).
NOTICE_AFTER = 1.0

_chosen = os.environ.get("CONVFILTER_BACKEND", "auto").strip().lower() or "auto"
_repeats = 1
_notice = None  # called once, from a timer thread, when a compile takes longer than NOTICE_AFTER
_noticed = False
_notice_lock = threading.Lock()
_cached: dict[str, bool] = {}  # kernel name -> in Numba's cache
_hash: bytes | None = None  # of _jit.py
_numba_failed = False  # importing Numba failed in this process: numpy from now on
_numpy_work: dict[str, float] = {}  # kernel name -> work done on its numpy twin in this process


def set_backend(name: str) -> None:
    """``"numba"`` or ``"numpy"`` for every call from now on, or ``"auto"`` (the default) to choose
    per call; the environment variable ``CONVFILTER_BACKEND`` sets the default."""
    global _chosen
    key = str(name).strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _chosen = key


def get_backend() -> str:
    return _chosen if _chosen in BACKENDS else "auto"


def expect_repeats(count: int) -> None:
    """Tell the ``auto`` choice that each call will be repeated about ``count`` times in this
    process (e.g. once per image of a batch), so that Numba's one-off costs are shared."""
    global _repeats
    _repeats = max(1, int(count))


@contextlib.contextmanager
def repeats_at_least(count: int):
    """Inside the block, :func:`expect_repeats` counts at least ``count`` repeats (e.g. one call of
    each kernel per layer of a network); the count set before is restored after it."""
    global _repeats
    previous = _repeats
    _repeats = max(previous, int(count))
    try:
        yield
    finally:
        _repeats = previous


def set_compile_notice(callback) -> None:
    """Call ``callback()`` (once per process) when Numba compiles for longer than NOTICE_AFTER."""
    global _notice
    _notice = callback


def kernel(name: str, work: float):
    """The function that runs kernel ``name`` for a call of ``work`` units, by the rule above."""
    global _numba_failed
    if _use_numba(name, work):
        try:
            return _numba_kernel(name)
        except (ImportError, OSError):
            # Numba cannot load here (e.g. its LLVM library finds no address space left under a
            # memory limit): numpy's kernels give the same bits, unless Numba was asked for
            if get_backend() == "numba":
                raise
            _numba_failed = True
    from . import _numpy_kernels

    return getattr(_numpy_kernels, name)


def compiled(name: str):
    """Numba's kernel ``name`` whatever the choice above: for a kernel with no numpy twin."""
    return _numba_kernel(name)


def compiled_possible() -> bool:
    """False when this process runs numpy's kernels only (chosen, or Numba failed to load)."""
    return get_backend() != "numpy" and not _numba_failed


def numba_imported() -> bool:
    """True once this process has imported Numba (its start-up is paid)."""
    return "numba" in sys.modules


def _use_numba(name: str, work: float) -> bool:
    backend = get_backend()
    if backend != "auto":
        return backend == "numba"
    if _numba_failed:
        return False
    if loaded(name):
        return True
    numpy_ns, numba_ns, compile_s = COSTS[name]
    start = (0.0 if "numba" in sys.modules else IMPORT_NUMBA) + (0.0 if _any_loaded() else FIRST_LOAD)
    start += LOAD if is_cached(name) else compile_s
    done = _numpy_work.get(name, 0.0)
    total = max(work * _repeats, work + done) * 1e-9
    if start + total * numba_ns < total * numpy_ns:
        return True
    _numpy_work[name] = done + work
    return False


def _jit():
    _numba_cache.before_numba_import()
    from . import _jit

    return _jit


def loaded(name: str) -> bool:
    """True when this process has Numba's kernel ``name`` compiled or loaded."""
    if name in _loaded:
        return True
    jit = sys.modules.get(f"{__package__}._jit")
    if jit is None or not getattr(jit, name).signatures:
        return False
    _loaded.add(name)  # a dispatcher keeps what it compiled or loaded: asking again costs 3 us
    return True


_loaded: set[str] = set()


def _any_loaded() -> bool:
    return any(loaded(name) for name in COSTS)


def _numba_kernel(name: str):
    dispatcher = getattr(_jit(), name)
    if loaded(name):
        return dispatcher

    def first_call(*args):
        """Load or compile on this call; say so when that takes long (a caller that keeps this
        function for many calls, one piece of an image each, pays for the timer only once, and
        then a set lookup: asking the dispatcher for its signatures costs 7 us a call)."""
        if loaded(name):
            return dispatcher(*args)
        timer = threading.Timer(NOTICE_AFTER, _tell_once)
        timer.daemon = True
        timer.start()
        try:
            return dispatcher(*args)
        finally:
            timer.cancel()
            timer.join()  # no thread is left behind (a server may fork after this)

    return first_call


def _tell_once() -> None:
    global _noticed
    with _notice_lock:
        if _noticed or _notice is None:
            return
        _noticed = True
    _notice()


# --- is a kernel in Numba's cache? ----------------------------------------------------------


def is_cached(name: str) -> bool:
    """True when Numba's cache folder holds kernel ``name`` compiled from the current ``_jit.py``
    (read from its index file, without importing Numba)."""
    if name not in _cached:
        folder = _numba_cache.jit_cache_folder()
        indexes = glob.glob(os.path.join(glob.escape(folder), _index_pattern(name))) if folder else []
        _cached[name] = any(_index_is_current(path) for path in indexes)
    return _cached[name]


def _index_pattern(name: str) -> str:
    # Numba names it "<module>.<function>-<first line>.py<major><minor><abiflags>.nbi"
    return f"_jit.{name}-*.py{sys.version_info[0]}{sys.version_info[1]}{getattr(sys, 'abiflags', '')}.nbi"


def _index_is_current(path: str) -> bool:
    """The index records the SHA-256 of the source it was compiled from (Numba's source stamp)."""
    try:
        with open(path, "rb") as index:
            return _source_hash() in index.read()
    except OSError:
        return False


def _source_hash() -> bytes:
    global _hash
    if _hash is None:
        with open(_numba_cache.JIT_SOURCE, "rb") as source:
            _hash = hashlib.sha256(source.read()).digest()
    return _hash

