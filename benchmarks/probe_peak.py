"""The machine's arithmetic and memory limits, measured: float32 FMA peak and copy bandwidth.

The benchmarks divide a workload's multiply-adds per second by the FMA peak and
its bytes moved per second by the copy bandwidth, to say how close each
workload comes to what the machine can do at all.

* FMA peak: a compiled loop of independent fused multiply-add chains on
  vectors as wide as convfilter's kernels use (16 floats with AVX-512, 8
  with AVX2), held in registers (no memory traffic), and numpy's BLAS on a
  large square float32 product; the larger of the two. The chains are
  written as LLVM vectors: LLVM vectorises a plain loop of scalars with
  256-bit vectors on Intel's AVX-512 CPUs (its tuning prefers them there),
  and that loop measured 44 GFLOP/s per core on a 2-vCPU Emerald Rapids
  where these chains measure 150-190.
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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from convfilter._jit import LANES

# Independent vector sums: at least an FMA's latency (4 cycles) times the FMA units (2) to keep
# them busy, and few enough to stay in registers (16 of AVX2's 16, or of AVX-512's 32).
CHAINS = 16


@intrinsic
def _vector_chains(typingctx, rounds, out):
    """``rounds`` times, each of CHAINS vectors of LANES floats becomes ``v * 0.999 + 0.001``
    (``llvm.fma``: one fused multiply-add of a whole vector register); the first lane of their
    sum is stored in ``out[0]``, so that the loop is not left out."""
    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.FloatType(), LANES)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             f"llvm.fma.v{LANES}f32")
        scale, shift = ir.Constant(vector, [0.999] * LANES), ir.Constant(vector, [0.001] * LANES)
        chains = []
        for chain in range(CHAINS):
            slot = cgutils.alloca_once(builder, vector)  # promoted to a register
            builder.store(ir.Constant(vector, [1.0 + chain] * LANES), slot)
            chains.append(slot)
        with cgutils.for_range(builder, args[0]):
            for slot in chains:
                builder.store(builder.call(fma, [builder.load(slot), scale, shift]), slot)
        total = builder.load(chains[0])
        for slot in chains[1:]:
            total = builder.fadd(total, builder.load(slot))
        data = context.make_array(signature.args[1])(context, builder, args[1]).data
        builder.store(builder.extract_element(total, ir.Constant(ir.IntType(32), 0)), data)
        return context.get_dummy_value()

    return types.void(rounds, out), codegen


@njit(nogil=True, cache=False)
def _fma_chains(out, rounds):
    _vector_chains(rounds, out)


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
    outs = [np.zeros(1, np.float32) for _ in range(threads)]
    _fma_chains(outs[0], 10)
    counter = iter(range(10**9))

    def work():
        _fma_chains(outs[next(counter) % threads], n)

    times = [_timed(work, threads) for _ in range(rounds)]
    return 2 * CHAINS * LANES * n * threads / statistics.median(times)


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
