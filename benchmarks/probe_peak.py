"""The machine's arithmetic and memory limits, measured: float32 FMA peak and copy bandwidth.

The benchmarks divide a workload's multiply-adds per second by the FMA peak and
its bytes moved per second by the copy bandwidth, to say how close each
workload comes to what the machine can do at all.

* FMA peak: a Numba loop of independent multiply-add chains on a block of
  floats that stays in registers or L1 cache (no memory traffic), and
  numpy's BLAS on a large square float32 product; the larger of the two.
* Copy bandwidth: ``np.copyto`` between two 256 MiB float32 arrays (read +
  write, counted as twice the size), well beyond any cache.

Both on one thread and on every thread, median of a few rounds. On a machine
shared with other work the figures come out low: run it on a quiet machine.

    python benchmarks/probe_peak.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

CHAINS = 256  # floats of independent FMA chains: 16 AVX-512 registers


@njit(nogil=True, fastmath=True, cache=False)
def _fma_chains(acc, a, b, rounds):
    for _ in range(rounds):
        for j in range(CHAINS):
            acc[j] = acc[j] * a + b


def _timed(fn, threads: int) -> float:
    """Wall time of ``fn()`` run on ``threads`` threads at once."""
    if threads == 1:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(lambda _: fn(), range(threads)))
        return time.perf_counter() - start


def fma_peak(threads: int = 1, rounds: int = 5) -> float:
    """float32 FLOP/s (2 per multiply-add) of independent FMA chains, ``threads`` at once."""
    n = 2_000_000
    accs = [np.ones(CHAINS, np.float32) for _ in range(threads)]
    _fma_chains(accs[0], np.float32(0.999), np.float32(1e-3), 10)
    counter = iter(range(10**9))

    def work():
        _fma_chains(accs[next(counter) % threads], np.float32(0.999), np.float32(1e-3), n)

    times = [_timed(work, threads) for _ in range(rounds)]
    return 2 * CHAINS * n * threads / statistics.median(times)


def blas_peak(threads: int = 1, rounds: int = 5) -> float:
    """float32 FLOP/s of numpy's BLAS on a 2048^3 product with ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    size = 2048
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    out = np.empty_like(a)
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, a, out=out)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            np.matmul(a, a, out=out)
            times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def copy_bandwidth(threads: int = 1, rounds: int = 5) -> float:
    """Bytes per second read plus written by ``np.copyto`` of 256 MiB, split across ``threads``."""
    count = 64 * 2**20
    src = np.ones(count, np.float32)
    dst = np.empty_like(src)
    edges = [count * t // threads for t in range(threads + 1)]
    parts = list(zip(edges, edges[1:]))
    counter = iter(range(10**9))

    def work():
        lo, hi = parts[next(counter) % threads]
        np.copyto(dst[lo:hi], src[lo:hi])

    np.copyto(dst, src)
    times = []
    for _ in range(rounds):
        counter = iter(range(10**9))
        times.append(_timed(work, threads))
    return 2 * src.nbytes / statistics.median(times)


def limits(threads: int) -> dict[str, float]:
    """``{"flops": FLOP/s, "bandwidth": bytes/s}`` for ``threads`` threads."""
    return {"flops": max(fma_peak(threads), blas_peak(threads)), "bandwidth": copy_bandwidth(threads)}


def main() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print("| threads | FMA loop GFLOP/s | BLAS sgemm GFLOP/s | copy GB/s (read + write) |")
    print("| ---: | ---: | ---: | ---: |")
    for threads in sorted({1, cpus}):
        print(f"| {threads} | {fma_peak(threads) / 1e9:.0f} | {blas_peak(threads) / 1e9:.0f} | "
              f"{copy_bandwidth(threads) / 1e9:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
