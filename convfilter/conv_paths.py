"""How a convolution is computed: the exact paths, what each needs, and the choice among them.

Every path computes the same formula (see :mod:`convfilter.ops`) to float32
rounding; they differ in the order of the sums and in speed:

* ``planar``: the direct loops of the kernels (:mod:`convfilter._jit`, or their numpy
  twins in :mod:`convfilter._numpy_kernels`, chosen by :mod:`convfilter._backend`) over the nonzero taps of a
  planar (N, C, Hp, Wp) copy; zero taps are skipped, so sparse banks (line
  kernels) cost only their nonzero weights. Fastest for few channels. With a
  column stride the copy's columns are dealt into phases (:func:`phase_taps`).
* ``separable``: rank-1 kernels as a column pass then a row pass (``kh + kw``
  instead of ``kh * kw`` operations per output).
* ``matmul``: a 1x1 kernel is one matrix product of the pixels (every ``stride``-th
  one) with the (C, F) filters, computed by numpy's BLAS.
* ``im2col``: the windows of a few output rows are copied into a tile that
  stays in cache, (pixels, fh*fw*C), and multiplied with the (fh*fw*C, F)
  filters by BLAS: the path for many channels.
* ``shifted``: stride 1 only. The padded image is a (Hp*Wp, C) matrix of pixels;
  computed in padded-width coordinates, the output is the sum over the taps
  ``(u, v)`` of the row window starting ``u*dh*Wp + v*dw`` pixels further on,
  times that tap's (C, F) filters: one BLAS product per tap on the image as it
  is, no window copies; the ``Wp - W_out`` extra columns of each row are dropped.
* ``winograd``: 3x3 and 5x5 kernels, stride 1, no dilation: Winograd's F(2x2, 3x3),
  each 2x2 block of outputs from 16 products per channel instead of 36, or F(2x2, 5x5),
  36 instead of 100, as 16 or 36 BLAS products of the transformed input blocks with
  the transformed filters.
* ``blocked``: compiled products of 8 pixels by two vectors of 16 filters (6
  pixels by two vectors of 8 without AVX-512) at a time, the sums in registers, on the padded
  NHWC image (a window row is a contiguous run of its source row; large images
  are padded a piece at a time, unpadded ones read in place). No copies of the
  windows and no BLAS packing: the path for 5x5 and 7x7 kernels, few filters,
  small maps with deep sums and 1x1 kernels over many channels with few filters.
  It runs on Numba only (see :func:`blocked_ready`).

Before any of them, a bank with the same kernels on every input channel can
filter the sum of the channels once (``sum_channels``).

:func:`choose_path` estimates each path's time from counts of multiply-adds,
copies and calls, with rates measured on the machine the package was tuned on
(:data:`COST`); only the ranking of the paths matters.
"""

from __future__ import annotations

import collections
import functools
import math
import sys
import threading

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _backend, _numpy_kernels
from . import threads as thread_pool
from .activations import apply_in_place
from .borders import fill_border, pad
from .geometry import AxisGeometry
from .threads import band_edges, run_bands

# The one list of paths: ``correlate(path=...)`` accepts these names and "auto".
CONV_PATHS = {
    "planar": "direct loops over the nonzero taps (few channels; zero taps skipped)",
    "separable": "column pass then row pass, for rank-1 kernels",
    "matmul": "1x1 kernels: one matrix product of the pixels with the filters (BLAS)",
    "im2col": "windows copied into cache-sized tiles, then a matrix product with the filters (BLAS)",
    "shifted": "stride 1: one matrix product per tap with a shifted window of the padded image (BLAS)",
    "winograd": "3x3 or 5x5, stride 1: Winograd F(2x2, 3x3) or F(2x2, 5x5), 16 or 36 matrix products of "
                "transformed blocks (BLAS)",
    "blocked": "compiled products of 8 pixels by 32 filters (AVX2: 6 by 16) at a time (Numba only)",
}


# The paths that multiply with BLAS (no channel sum, no zero taps skipped).
GEMM_PATHS = ("matmul", "im2col", "shifted", "winograd")
# ... and every path that reads each input channel (no channel sum).
DENSE_PATHS = (*GEMM_PATHS, "blocked")


def check_path(path: str) -> str:
    """``path`` if it is "auto" or one of :data:`CONV_PATHS`, else ValueError."""
    if path != "auto" and path not in CONV_PATHS:
        raise ValueError(f"unknown conv path {path!r}; choose 'auto' or one of {', '.join(CONV_PATHS)}")
    return path


# --- what the paths need ---------------------------------------------------------------------


def rank_one(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(col, row)`` with ``outer(col, row) == kernel`` to float32 precision, or None.

    The largest entry's row and column define the factors. The check runs in
    float64 and is relative to each entry (zeros must stay exactly zero), so
    every effective weight is within a few float32 ulps of the given one and
    the separable result stays within the rounding of the direct formula.
    """
    k = kernel.astype(np.float64)
    p, q = np.unravel_index(np.argmax(np.abs(k)), k.shape)
    peak = k[p, q]
    if peak == 0.0:
        return np.zeros(k.shape[0], np.float32), np.zeros(k.shape[1], np.float32)
    col, row = k[:, q] / peak, k[p, :]
    if np.any(np.abs(np.outer(col, row) - k) > 4 * np.finfo(np.float32).eps * np.abs(k)):
        return None
    return col.astype(np.float32), row.astype(np.float32)


def clearly_not_rank_one(kernel: np.ndarray) -> bool:
    """True when the top-left 2x2 minor of ``kernel`` is far from zero, which no kernel that
    :func:`rank_one` accepts can have (its minors vanish to a few ulps): a trained or random
    bank is turned down in a microsecond instead of :func:`rank_one`'s dozen numpy calls."""
    a, b, c, d = float(kernel[0, 0]), float(kernel[0, 1]), float(kernel[1, 0]), float(kernel[1, 1])
    return abs(a * d - b * c) > 1e-4 * (abs(a * d) + abs(b * c))


def separable_factors(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row factors (F, C, kh) and (F, C, kw) when every w[:, :, c, f] is rank 1."""
    fh, fw, n_in, n_out = w.shape
    if fh == 1 or fw == 1:  # one column or one row is rank 1 as it is, with the other factor 1
        ones = np.ones((n_out, n_in, 1), np.float32)
        if fw == 1:
            return np.ascontiguousarray(w[:, 0].transpose(2, 1, 0)), ones
        return ones, np.ascontiguousarray(w[0].transpose(2, 1, 0))
    if clearly_not_rank_one(w[:, :, 0, 0]):
        return None
    cols = np.empty((n_out, n_in, fh), np.float32)
    rows = np.empty((n_out, n_in, fw), np.float32)
    for f in range(n_out):
        for c in range(n_in):
            factors = rank_one(w[:, :, c, f])
            if factors is None:
                return None
            cols[f, c], rows[f, c] = factors
    return cols, rows


def sums_input_channels(w: np.ndarray) -> bool:
    """True when every input channel of the (fh, fw, in, out) bank ``w`` has the same kernels, so
    the sum of the channels is filtered once (and 8-bit ``input_scale`` samples are read as they are)."""
    # a trained bank stops at its first two weights (a scalar test: np.array_equal costs 4 us)
    if w.shape[2] < 2 or w[0, 0, 0, 0] != w[0, 0, 1, 0] or not np.array_equal(w[:, :, 1], w[:, :, 0]):
        return False
    return bool(np.all(w == w[:, :, :1, :]))


def window_taps_used(w: np.ndarray) -> int:
    """How many (u, v, c) taps of the (fh, fw, C, F) bank ``w`` are nonzero in some filter. A
    trained bank is dense: when the first filter alone uses every tap, the rest is not read
    (a 7x7x512x512 bank is 51 MB, and reading it costs as much as a small layer's product)."""
    fh, fw, n_in, _ = w.shape
    if w[..., 0].all():  # the method: np.all's wrapper doubles the time on a small bank
        return fh * fw * n_in
    return int(np.count_nonzero(np.any(w != 0, axis=3)))


def padded_count(taps: int) -> int:
    """Tap lists are padded with zero-weight taps to a multiple of four (at least four)."""
    return max(4, -(-taps // 4) * 4)


def direct_taps(w: np.ndarray, padded_h: int, dilations, phases: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The direct path's one tap list for all filters: (T, 2) positions ``(c*Hp + u*dh, v*dw)``
    where any filter is nonzero (on a copy dealt into ``phases`` column phases, see
    :func:`phase_taps`), and the (F, T) weights there; zero-weight padding at (0, 0). A trained
    bank uses every tap: its positions depend on the shapes alone and are worked out once per
    shape (:func:`dense_taps`; 20-40 us a call, a tenth of a small first layer's)."""
    fh, fw, n_in, n_out = w.shape
    per_filter = w.transpose(3, 2, 0, 1).reshape(n_out, n_in * fh * fw)  # taps in (c, u, v) order
    if per_filter[0].all():  # a trained bank: the first filter uses every tap
        taps = dense_taps(fh, fw, n_in, padded_h, tuple(dilations), phases).copy()  # writable: one compiled signature
        weights = np.zeros((n_out, taps.shape[0]), np.float32)
        weights[:, : per_filter.shape[1]] = per_filter
        return taps, weights
    used = np.flatnonzero(per_filter.any(axis=0))
    taps = _tap_positions(used, fh, fw, padded_h, dilations)
    if phases > 1:
        taps = phase_taps(taps, padded_h, phases)
    weights = np.zeros((n_out, taps.shape[0]), np.float32)
    weights[:, : len(used)] = per_filter[:, used]
    return taps, weights


def _tap_positions(used: np.ndarray, fh: int, fw: int, padded_h: int, dilations) -> np.ndarray:
    """The (T, 2) positions of the taps ``used`` (indices in (c, u, v) order), padded to
    :func:`padded_count` with (0, 0)."""
    taps = np.zeros((padded_count(len(used)), 2), np.int64)
    c, cell = np.divmod(used, fh * fw)
    u, v = np.divmod(cell, fw)
    taps[: len(used), 0] = c * padded_h + u * dilations[0]
    taps[: len(used), 1] = v * dilations[1]
    return taps


@functools.lru_cache(maxsize=256)
def dense_taps(fh: int, fw: int, n_in: int, padded_h: int, dilations: tuple[int, int], phases: int) -> np.ndarray:
    """:func:`direct_taps`'s positions for a bank that uses every tap (read only: the kernels take
    a copy, a writable array as every call's)."""
    taps = _tap_positions(np.arange(fh * fw * n_in), fh, fw, padded_h, dilations)
    if phases > 1:
        taps = phase_taps(taps, padded_h, phases)
    taps.flags.writeable = False
    return taps


def row_group_taps(cols: np.ndarray, group: int, sh: int, dh: int,
                   padded_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Column taps for ``group`` output rows at once: row ``i + k`` reads rows ``k*sh + u*dh``
    (relative to ``i*sh``). Returns (F, C, T, 2) positions of the union of the nonzero taps and
    (F, C, group, T) weights, zero-weight padding at (0, 0).
    """
    n_out, n_in, _ = cols.shape
    tables = {}
    for f in range(n_out):
        for c in range(n_in):
            table: dict[int, list[float]] = {}
            for u in np.flatnonzero(cols[f, c]):
                for k in range(group):
                    table.setdefault(int(k * sh + u * dh), [0.0] * group)[k] = cols[f, c, u]
            tables[f, c] = sorted(table.items())
    count = padded_count(max(len(t) for t in tables.values()))
    taps = np.zeros((n_out, n_in, count, 2), np.int64)
    weights = np.zeros((n_out, n_in, group, count), np.float32)
    for (f, c), table in tables.items():
        for t, (offset, per_row) in enumerate(table):
            taps[f, c, t, 0] = c * padded_h + offset
            weights[f, c, :, t] = per_row
    return taps, weights


def tap_lists(kernels: np.ndarray, spacing: int, padded_h: int, vertical: bool):
    """The nonzero taps of each 1-D kernel ``kernels[f, c]`` as (F, C, T, 2) (row, column)
    positions and (F, C, T) weights; zero-weight padding at (0, 0).

    Vertical taps walk down the rows of channel ``c`` (row ``c*padded_h + index*spacing``),
    horizontal ones along a row (column ``index*spacing``). Zero weights are left out: exact,
    they add nothing.
    """
    n_out, n_in, _ = kernels.shape
    count = padded_count(max(np.count_nonzero(kernels[f, c]) for f in range(n_out) for c in range(n_in)))
    taps = np.zeros((n_out, n_in, count, 2), np.int64)
    weights = np.zeros((n_out, n_in, count), np.float32)
    for f in range(n_out):
        for c in range(n_in):
            index = np.flatnonzero(kernels[f, c])
            if vertical:
                taps[f, c, : len(index), 0] = c * padded_h + index * spacing
            else:
                taps[f, c, : len(index), 1] = index * spacing
            weights[f, c, : len(index)] = kernels[f, c, index]
    return taps, weights


# --- choosing --------------------------------------------------------------------------------

# The constants of :func:`estimated_seconds`, fitted to single-thread timings of every path
# over channels 1-128, filters 1-256, kernels 1-7, strides 1-2 and 48x48 to 512x512 images
# on a 2-vCPU Zen4 (AVX-512) with numpy's OpenBLAS; ``benchmarks/sweep_tensorflow.py`` checks
# the choice against TensorFlow. They only need to rank the paths: with them the chosen path
# was within 1.25x of the fastest in all but a few tiny cases, and never worse than 1.5x where
# a call takes over 0.2 ms.
COST = {
    "call": {"planar": 31e-6, "separable": 40e-6, "matmul": 12e-6, "im2col": 12e-6, "shifted": 12e-6,
             "winograd": 12e-6},
    # the direct loops' blocks of a vector of outputs: a least-squares fit of 89 first layers on
    # one thread (1-4 channels, 8-64 filters, 1x1 to 7x7 kernels, maps of 28x28 to 1024x1024;
    # with the call and the rows below: to within 0.72-1.27x, 90% of them within 0.8-1.2x)
    "direct_vector_rate": 46e9,  # multiply-adds per second
    "direct_vector_store": 0.11e-9,  # per output float, stored into the NHWC output
    "direct_vector_far_store": 0.29e-9,  # ... and more per float of an output of over 4 MB
    # ... and on images, rows narrower than a vector take the loops over rows, estimated with the
    # constants below (fitted before the blocks, to 1024x1024 maps) times this (same fit)
    "direct_rows_scale": 2.6,
    "direct_rate": 20.8e9,  # multiply-adds per second of the direct loops
    "direct_row": 0.94e-9,  # per output row, filter and tap of the direct loops
    "separable_rate": 16e9,  # multiply-adds per second of the separable passes
    "separable_row": 300e-9,  # per output row, filter and input channel of the separable path
    "direct_spill": 0.45e-9,  # per output float and doubling of the row scratch beyond DIRECT_SCRATCH
    # per output float of the direct loops with at most four taps, which spend their time storing
    # the rows transposed (measured on one thread: 512x512x3 * 1x1x3x16 4.2 ms against an estimate
    # of 1.4 without it; 1024x1024x3 * 1x1x3x16 23 ms against 5.5)
    "direct_store": 0.7e-9,
    # a column stride: the copy's columns are dealt into phases (see phase_taps), read one after
    # the other; the loops run at their stride-1 speed but over fewer, shorter rows (fitted on one
    # thread to 1024x1024x3 * 3x3x3x16 and 6 other first layers with stride 2: 0.9-1.9, 4.0 when
    # the loops read every other cell)
    "direct_stride_penalty": 1.3,
    "separable_stride_penalty": 2.5,  # ... and so does the separable row pass
    "planar_copy_rate": 1.5e9,  # floats per second into the padded planar copy
    "gemm_rate": 40.8e9,  # BLAS multiply-adds per second with many filters and a deep sum
    "gemm_half_filters": 4.0,  # BLAS runs at half speed with this many filters
    "gemm_half_depth": 1.5,  # ... or with this many products per output
    "gemm_store_rate": 5e9,  # output floats per second that BLAS writes
    "tile_copy_rate": 4e9,  # floats per second copied into im2col tiles
    "tile_run": 7.5e-9,  # per contiguous run of a window copied into a tile
    "shift_sum_rate": 6e9,  # output floats per second each tap of the shifted path adds to its sum
    "shift_call": 5e-6,  # per BLAS call of the shifted path (one per tap and tile)
    # block floats (16 per channel, in and out) per second transformed: the fit of the numpy passes
    # (1.15e9) times the 2.5x that Numba's transform kernels measured over them
    "winograd_transform_rate": 2.9e9,
    # ... on vectors of half as many floats where Numba compiles for AVX2 (a Zen3, one thread:
    # the input transform 1.5-3.9 G floats per second, the output's 2.7-5.7, on 32-256 channels;
    # with the rate above, 3x3 layers of 16-32 channels took winograd at 1.1-2.5x the blocked
    # path's time on two threads, 56x56x32 * 3x3x32x32 1.08 against 0.84 ms)
    "winograd_transform_rate_avx2": 1.45e9,
    # per (input channel, filter) pair: transforming the filters. Its kernel now takes 4-5 ns
    # in a call (3x3x256x256 0.25-0.5 ms, 3x3x512x512 1.1-1.3 ms); at 5 ns the estimate would
    # pick winograd for 16x16x384 * 3x3x384x384 (3.67 against blocked 3.92 ms) and 14x14x512 *
    # 3x3x512x512 (6.15 against 6.47) on AVX-512, but also for 14x14x256 * 3x3x256x256 where
    # Numba compiles for AVX2 (Numba held to AVX2 on a Zen4: winograd 3.00, blocked 2.48 ms),
    # whose transform estimate is low for small maps: it stays at the old transform's cost
    "winograd_filter_pair": 10e-9,
    "winograd_filter_read_rate": 2e9,  # transformed filter floats per second BLAS packs, per chunk
    # F(2x2, 5x5)'s transforms make each float from 5-6 terms, the 3x3 ones' from 2-3: their rate
    # is the one above over this (the 5x5 input transform measured 1 ns a float on one thread)
    "winograd5_transform_slowness": 2.0,
    # the blocked path: a least-squares fit of 218 shapes on one thread (the earlier fit's 103: 30
    # of the sweep, 36 random ones and 37 small maps; and 115 of 64-256 filters: to within
    # 0.57-1.25x, 91% of them within 0.8-1.2x), with its rate (94% of the FMA peak) and the copy
    # rates held
    # its call: the fit's 18 us less 9, by which the fit overstated it against im2col's on the
    # smallest calls, measured after the kernel's runs took offsets (16 shapes of 4x4-14x14
    # maps, 8-128 channels, two threads, medians of 75 calls in 15 alternating rounds: blocked 3-23 us
    # faster than im2col where the estimates had it 0-5 us slower; with 9 us, 23 of the
    # sweep's shapes changed path, all to blocked, each measured level or faster: 14x14x256 *
    # 3x3x256x256 3.48 -> 2.71 ms, 7x7x64 * 7x7x64x256 with stride 2 0.76 -> 0.66, 14x14x512 *
    # 1x1x512x16 with stride 2 0.090 -> 0.068, 28x28x64 * 3x3x64x64 0.71 level)
    "blocked_call": 9e-6,
    "blocked_rate": 55e9,  # multiply-adds per second of its vector products (padded filters included)
    # ... and with AVX2's vectors of 8 (6 pixels by 16 filters): on a 2-vCPU Zen3 the path ran
    # 1.3x (median of 49 shapes of 16-512 filters, 3x3 to 7x7 kernels, 7x7 to 224x224 maps, one
    # thread) further below its estimate with the rate above than im2col's BLAS did below its
    # own, 1.6x on 1x1 kernels (which it is then rarely chosen for), and 1.1-1.2x on two threads
    # (40 other shapes, interleaved: with 46e9, 9 of them chose the slower of the two paths and
    # cost 2.6% on average over the faster; with 42e9, 11 and 4.2%)
    "blocked_rate_avx2": 46e9,
    "blocked_piece": 20e-9,  # per block of pixels and a piece of its sum (see _jit.DEPTH_PIECE)
    # floats per second of the padded copy (not fitted: the fit's images were small enough to stay
    # in cache, 12.5e9; a 64 MB image is copied at 1.3e9)
    "blocked_padded_rate": 4e9,
    "blocked_tail_rate": 6e9,  # filter floats per second copied into the last vector's, once per call
    # per cache line of filters read from beyond L2, once per group of rows and vector (when the
    # vector's lines are more than L2 holds of lines that far apart: see blocked_far_lines) ...
    "blocked_far_line": 1.5e-9,
    # ... and per page of the bank that line crosses, when the bank is larger than the TLB reaches
    # (7x7x256 * 7x7x256x256 with stride 2: 1.48 ms, estimated 1.71 with these two terms and 0.74
    # without them)
    "blocked_page": 21e-9,
}

# The direct loops sum each output row of every filter in a (F, W_out) scratch block before
# storing it transposed: beyond this many floats it leaves the L1 cache, and each doubling costs
# about ``direct_spill`` per output float (measured with Numba on two threads: 1.7-3.8 ns per
# output float for 1024x1024x3 * 1x1x3x64, a 64 Ki-float block, against 0.4 ns for
# 112x112x3 * 3x3x3x16; the constant ranks the direct loops against BLAS as measured on
# 1024x1024 maps of 1 and 3 channels with 8-64 filters and 1x1 to 5x5 kernels). The threshold
# is the 32 KB L1 cache: at 4 Ki floats the first layer of a VGG stack (224x224x3 * 3x3x3x32,
# a 7 Ki-float block) left the direct loops for im2col, 2.6 -> 3.5 ms.
DIRECT_SCRATCH = 8192
# ... but rows at least this wide are summed in tiles that fit (``_jit.PLANAR_TILE_MIN_WIDTH``)
PLANAR_TILE_MIN_WIDTH = 512
# Rows of at least this many outputs are summed in blocks of a vector register's outputs (16 with
# AVX-512, ``_jit.VECTOR_PIXELS``; the estimate takes 16 everywhere, not to import Numba) ...
PLANAR_VECTOR_PIXELS = 16
# ... whose estimate was fitted on images, of up to this many channels. With more, the blocks ran
# at 22-37 G multiply-adds per second on one thread (56x56x8 * 3x3x8x32 0.33 ms, 28x28x512 *
# 3x3x512x64 7.7 ms; their taps lie in many planes), below the rate fitted on images, and the
# estimate keeps the loops' earlier one: those calls stay with the paths made for many channels
# (with the blocks' rate, 56x56x512 * 3x3x512x512 with stride 2 took the direct loops, 49 ms
# against TensorFlow's 25).
PLANAR_IMAGE_CHANNELS = 4
# The blocks' stores cost more on an output larger than this (see direct_vector_far_store).
PLANAR_FAR_OUTPUT_BYTES = 4 << 20


def blas_seconds(multiply_adds, n_out: int, depth: int) -> float:
    """BLAS's time for ``multiply_adds`` in products with ``n_out`` columns and sums ``depth`` long
    (it runs below its rate for few filters or short sums)."""
    efficiency = n_out / (n_out + COST["gemm_half_filters"]) * depth / (depth + COST["gemm_half_depth"])
    return multiply_adds / (COST["gemm_rate"] * efficiency)


def compiled_for_avx2() -> bool:
    """Whether Numba's kernels are loaded and compiled for AVX2's vectors of 8 floats, not
    AVX-512's 16: the estimates take the rates measured there (they never import Numba to know)."""
    jit = sys.modules.get(f"{__package__}._jit")
    return jit is not None and jit.LANES == 8


def winograd_transform_rate() -> float:
    """The Winograd transforms' rate (see :data:`COST`), at AVX2's vectors where the kernels run on them."""
    return COST["winograd_transform_rate_avx2" if compiled_for_avx2() else "winograd_transform_rate"]


def estimated_seconds(path: str, x_shape, w_shape, out_shape, strides, dilations, taps: int = 0,
                      separable_taps: tuple[float, float] = (0.0, 0.0)) -> float:
    """A single-thread time estimate for ``path`` on these shapes (see :data:`COST`).

    ``taps`` is the direct path's (padded) tap count; ``separable_taps`` the mean nonzero
    column and row taps per kernel of the separable path.
    """
    n_img, height, width, n_in = x_shape
    fh, fw, _, n_out = w_shape
    out_h, out_w = out_shape[1], out_shape[2]
    outputs = n_img * out_h * out_w
    strided = strides[1] > 1
    planar_copy = n_img * height * width * n_in / COST["planar_copy_rate"]
    if path == "planar":
        # an image, not a scaling (a 1x1 kernel on one channel, see choose_path)
        image = n_in <= PLANAR_IMAGE_CHANNELS and fh * fw * n_in > 1
        if image and out_w >= PLANAR_VECTOR_PIXELS:  # blocks of a vector of outputs (a stride is dealt into phases)
            stores = outputs * n_out
            far = stores if stores * 4 > PLANAR_FAR_OUTPUT_BYTES else 0  # written out of the caches
            return (COST["call"][path] + stores * taps / COST["direct_vector_rate"]
                    + stores * COST["direct_vector_store"] + far * COST["direct_vector_far_store"] + planar_copy)
        # the loops over rows: a row's sums in a scratch block (wide rows are summed in tiles)
        scratch = n_out * out_w if out_w < PLANAR_TILE_MIN_WIDTH else 0
        spill = outputs * n_out * COST["direct_spill"] * max(0.0, np.log2(max(scratch, 1) / DIRECT_SCRATCH))
        penalty = COST["direct_stride_penalty"] if strided else 1.0
        # one group of four taps (a 1x1 kernel on 2-4 channels): storing the rows is the work
        store = outputs * n_out * COST["direct_store"] if taps <= 4 else 0.0
        return (COST["call"][path] + planar_copy + spill + (COST["direct_rows_scale"] if image else 1.0) * (
            outputs * n_out * taps * penalty / COST["direct_rate"] + n_img * out_h * n_out * taps * COST["direct_row"]
            + store))
    if path == "separable":
        col_taps, row_taps = separable_taps
        rows = n_img * out_h * n_out * n_in
        ops = rows * (col_taps * (width + fw) + row_taps * out_w)
        penalty = COST["separable_stride_penalty"] if strided else 1.0
        return (COST["call"][path] + (rows * COST["separable_row"] + ops / COST["separable_rate"]) * penalty
                + planar_copy)
    if path == "shifted":
        padded_w = out_w + (fw - 1) * dilations[1]
        rows = n_img * out_h * padded_w  # products in padded-width coordinates
        taps = fh * fw
        tiles = n_img * out_h / min(out_h, max(1, SHIFT_TILE_FLOATS // (padded_w * n_out)))
        # each band of rows is at least one tile of its own (measured: 112x112x16 * 7x7x16x16 runs
        # in 32 bands of 3-4 rows, 49 products each, and takes twice as long as im2col)
        tiles = max(tiles, len(band_edges(n_img * out_h, outputs * n_out * taps * n_in,
                                          rows_holding(MIN_TILE_PIXELS, out_w))) - 1)
        padded_copy = n_img * (out_h + (fh - 1) * dilations[0]) * padded_w * n_in / COST["tile_copy_rate"]
        return (COST["call"][path] + blas_seconds(rows * n_out * taps * n_in, n_out, n_in)
                + rows * n_out * taps / COST["shift_sum_rate"] + outputs * n_out / COST["gemm_store_rate"]
                + tiles * taps * COST["shift_call"] + padded_copy)
    if path == "blocked":
        return blocked_seconds(x_shape, w_shape, out_shape, strides, dilations)
    if path == "winograd":
        matrices = winograd_matrices(fh)
        blocks = n_img * -(-out_h // 2) * -(-out_w // 2)
        chunks = n_img * -(-out_h // 2) / min(-(-out_h // 2), winograd_chunk_rows(-(-out_w // 2), matrices))
        # a 5x5 kernel's transforms make each float from about twice as many terms
        transform_rate = winograd_transform_rate() / (1.0 if fh == 3 else COST["winograd5_transform_slowness"])
        return (COST["call"][path] + blas_seconds(blocks * matrices * n_in * n_out, n_out, n_in)
                + blocks * matrices * (n_in + n_out) / transform_rate
                + n_in * n_out * COST["winograd_filter_pair"] * matrices / 16
                + chunks * matrices * n_in * n_out / COST["winograd_filter_read_rate"])
    depth = fh * fw * n_in
    seconds = (COST["call"][path] + blas_seconds(outputs * n_out * depth, n_out, depth)
               + outputs * n_out / COST["gemm_store_rate"])
    if path == "im2col" or (strides != (1, 1) and not reads_in_place(w_shape, strides)):
        runs = fh if dilations[1] == 1 else fh * fw  # a window row is one run of fw*C floats
        seconds += outputs * (depth / COST["tile_copy_rate"] + runs * COST["tile_run"])
    return seconds


def choose_path(x_shape, w, strides, dilations, out_shape, factors) -> str:
    """The path with the smallest :func:`estimated_seconds` for this call.

    1x1 kernels choose between the direct loops and ``matmul``, larger ones between the direct
    loops, ``im2col``, (stride 1) ``shifted`` and (3x3 or 5x5, stride 1, no dilation) ``winograd``;
    rank-1 kernels (``factors`` not None) may take ``separable``; kernels larger than 1x1 with
    at least 8 input channels and at most 256 filters (512 for an output of at most 1 MiB), and
    1x1 kernels with at least 256 channels and at most 128 filters, in a process that runs
    Numba, may take ``blocked``; shallower 1x1 kernels with few filters on maps of at least
    28x28 take it there without an estimate (see :func:`pointwise_direct`). A single input
    channel and a 1x1 kernel is a scaling, not a product: BLAS is slow at it.
    """
    fh, fw, n_in, n_out = w.shape
    used = window_taps_used(w)
    mean_taps = None
    if factors is not None:
        cols, rows = factors
        mean_taps = (np.count_nonzero(cols) / cols[..., 0].size, np.count_nonzero(rows) / rows[..., 0].size)
    ready = blocked_ready()
    key = (tuple(x_shape), w.shape, tuple(strides), tuple(dilations), tuple(out_shape), used, mean_taps, ready)
    path = _choices.get(key)
    if path is None:
        offer_blocked = ((BLOCKED_MIN_CHANNELS <= n_in if fh * fw > 1
                          else (BLOCKED_MIN_POINTWISE_CHANNELS <= n_in and n_out <= BLOCKED_MAX_POINTWISE_FILTERS)
                          or pointwise_direct(x_shape, w.shape))
                         and blocked_fits(w.shape, out_shape[1:3], dilations)
                         and ready and blocked_filters_fit(n_out, out_shape))
        if len(_choices) >= MAX_CHOICES:
            _choices.clear()
        path = _choices[key] = _cheapest_path(x_shape, w.shape, strides, dilations, out_shape, used, mean_taps,
                                              offer_blocked)
    return path


# The paths chosen so far, by everything the choice depends on: a loop of calls (a network, a
# batch, a sweep) pays the estimates once per shape (18 us, a tenth of a small call).
_choices: dict[tuple, str] = {}
MAX_CHOICES = 4096


def _cheapest_path(x_shape, w_shape, strides, dilations, out_shape, used: int, mean_taps, offer_blocked: bool) -> str:
    fh, fw, n_in, n_out = w_shape
    costs = {"planar": estimated_seconds("planar", x_shape, w_shape, out_shape, strides, dilations,
                                         taps=padded_count(used))}
    if mean_taps is not None:
        costs["separable"] = estimated_seconds("separable", x_shape, w_shape, out_shape, strides, dilations,
                                               separable_taps=mean_taps)
    if fh * fw * n_in > 1:
        gemm = "matmul" if fh == fw == 1 else "im2col"
        costs[gemm] = estimated_seconds(gemm, x_shape, w_shape, out_shape, strides, dilations)
        if gemm == "im2col" and tuple(strides) == (1, 1):
            costs["shifted"] = estimated_seconds("shifted", x_shape, w_shape, out_shape, strides, dilations)
        if winograd_offered(w_shape, strides, dilations, out_shape):
            costs["winograd"] = estimated_seconds("winograd", x_shape, w_shape, out_shape, strides, dilations)
        if offer_blocked:
            if pointwise_direct(x_shape, w_shape):
                return "blocked"
            costs["blocked"] = estimated_seconds("blocked", x_shape, w_shape, out_shape, strides, dilations)
    return min(costs, key=costs.get)


# --- running ---------------------------------------------------------------------------------


def correlate(x, w, strides, dilations, gh: AxisGeometry, gw: AxisGeometry, path: str = "auto",
              sum_channels: bool | None = None, bias: np.ndarray | None = None,
              activation: str = "none", border: str = "CONSTANT",
              input_scale: float | None = None, check_bank=None) -> np.ndarray:
    """NHWC float32 result of the cross-correlation, by the fastest exact path (or the one forced).

    ``x`` is C-contiguous float32 NHWC and ``w`` C-contiguous float32 (fh, fw, C, F).
    ``sum_channels`` (None: when it applies) filters the sum of the input channels once with
    one channel's kernels (planar and separable paths). ``path`` is "auto" or one of
    :data:`CONV_PATHS`. ``bias`` (float32, one per filter, or None) and a ReLU are applied as
    each row or tile is stored; any other ``activation`` (a key of
    :data:`convfilter.activations.IN_PLACE`) in place on each finished tile or on the result.
    ``border`` (a checked mode of :func:`~convfilter.borders.pad`) fills the padding cells of
    the padded copy that every path reads, so each border keeps every path. With
    ``input_scale``, ``x`` holds 8-bit samples and the bank sums its input channels: the
    channel-sum copy reads each sample's float value ``sample / input_scale``.

    ``check_bank`` (optional) raises when the bank holds a NaN or an infinity; it runs before
    any kernel reads the bank, or, where :func:`bank_shows_in_output` says a bad weight cannot
    hide, only when the finished result is not finite (see :data:`LATE_BANK_CHECK`).
    """
    check_path(path)
    if path in DENSE_PATHS and sum_channels:
        raise ValueError(f"sum_channels applies to the planar and separable paths, not {path}")
    if path == "matmul" and w.shape[:2] != (1, 1):
        raise ValueError(f"the matmul path needs a 1x1 kernel, got {w.shape[0]}x{w.shape[1]}")
    if path == "shifted" and tuple(strides) != (1, 1):
        raise ValueError(f"the shifted path needs strides 1, got {tuple(strides)}")
    if path == "winograd" and not winograd_fits(w.shape, strides, dilations):
        raise ValueError(f"the winograd path needs a 3x3 or 5x5 kernel, strides 1 and dilations 1, got a "
                         f"{w.shape[0]}x{w.shape[1]} kernel, strides {tuple(strides)}, dilations {tuple(dilations)}")
    if path == "blocked":
        check_blocked(w.shape, (gh.out, gw.out), dilations)
    if sum_channels is None:
        sum_channels = path not in DENSE_PATHS and sums_input_channels(w)
    elif sum_channels and not (w.shape[2] == 1 or np.all(w == w[:, :, :1, :])):
        raise ValueError("sum_channels needs the same kernels on every input channel")
    if sum_channels:
        w = np.ascontiguousarray(w[:, :, :1, :])
    out_shape = (x.shape[0], gh.out, gw.out, w.shape[3])
    late = (check_bank is not None and activation == "none"
            and w.size > max(math.prod(out_shape), LATE_CHECK_MIN_WEIGHTS))
    if not late:
        if check_bank is not None:
            check_bank()
        return _correlate_chosen(x, w, path, strides, dilations, gh, gw, sum_channels, bias, activation, border,
                                 input_scale, out_shape, None)
    with np.errstate(invalid="ignore", over="ignore"):  # no warnings from a bad bank on the way to its error
        return _correlate_chosen(x, w, path, strides, dilations, gh, gw, sum_channels, bias, activation, border,
                                 input_scale, out_shape, check_bank)


def _correlate_chosen(x, w, path, strides, dilations, gh, gw, sum_channels, bias, activation, border, input_scale,
                      out_shape, late_check):
    """:func:`correlate` once its arguments are checked: the path chosen (``path`` "auto") and
    run; with ``late_check``, the bank's check is made only if the result is not finite, or
    first where the path could leave a bad weight out of every sum."""
    # a 1-row or 1-column kernel gains nothing from two passes: no need to look for factors
    worth_factoring = path == "separable" or (path == "auto" and w.shape[0] > 1 and w.shape[1] > 1)
    factors = separable_factors(w) if worth_factoring else None
    if path == "separable" and factors is None:
        raise ValueError("the separable path needs rank-1 kernels")
    out = result_array(out_shape)
    if path == "auto":
        path = choose_path((x.shape[0], x.shape[1], x.shape[2], w.shape[2]), w, strides, dilations, out.shape,
                           factors)
        if sum_channels and path not in ("planar", "separable"):
            path = "separable" if factors is not None else "planar"
    if late_check is not None and not bank_shows_in_output(path, gh, gw):
        late_check()
        late_check = None
    _correlate_by(path, x, w, strides, dilations, gh, gw, sum_channels, factors, bias, activation, out, border,
                  input_scale)
    # NaN or infinity somewhere (or a sum of squares that overflows): only then is the bank read
    if late_check is not None and not math.isfinite(np.dot(out.reshape(-1), out.reshape(-1))):
        late_check()
    return out


# The bank's check for NaN and infinity reads every weight, which on a deep bank costs a good part
# of a call (a 7x7x512 map * 3x3x512x512 with stride 1, 9.4 MB of weights: 0.73 of 4.2 ms;
# 28x28x256 * 7x7x256x256 with stride 2: 1.2 of 15 ms). Where the bank is larger than the
# result, the call has no activation and its path multiplies every weight into the sums of its
# filter's outputs, the result is checked instead: a NaN or an infinity among the weights makes
# NaN or infinity of every sum it enters (a product with it is NaN or infinite, zeros included,
# and a sum with one such term stays so), and only then is the bank checked, to raise. An
# activation could hide them (a ReLU makes -inf 0), so with one the bank is checked first.
LATE_BANK_CHECK = ("matmul", "im2col", "shifted", "winograd", "blocked")
# ... for a bank of more than this many weights: a smaller one is read in a few microseconds, about
# what the late check's own steps cost (7x7x64 * 3x3x64x64, 37 Ki weights: 0.97-0.99x checked late)
LATE_CHECK_MIN_WEIGHTS = 1 << 17


def bank_shows_in_output(path: str, gh: AxisGeometry, gw: AxisGeometry) -> bool:
    """Whether every weight of the bank enters some output's sum on ``path`` for this geometry:
    the paths of :data:`LATE_BANK_CHECK` multiply every tap with what it meets, zero padding
    included, except that the blocked path leaves out the window rows that lie in the padding
    above and below the image, so there every kernel row must meet an image row somewhere."""
    if path not in LATE_BANK_CHECK:
        return False
    return path != "blocked" or all(_tap_row_read(gh, u) for u in range(gh.window))


def _tap_row_read(g: AxisGeometry, u: int) -> bool:
    """Whether kernel row ``u`` lies on a row of the image (not its padding) for some output row."""
    shift = u * g.dilation - g.pad_before  # output row i reads image row i * stride + shift
    first = max(0, -(-(-shift) // g.stride))  # the first output row that reads a row >= 0
    return first < g.out and first * g.stride + shift < g.size


def _correlate_by(path, x, w, strides, dilations, gh, gw, sum_channels, factors, bias, activation, out, border,
                  input_scale) -> None:
    """:func:`correlate`'s work once its path is chosen: ``out`` filled by ``path``."""
    if path == "blocked":
        correlate_blocked(x, w, strides, dilations, gh, gw, bias, activation, out, border)
    elif path == "shifted":
        correlate_shifted(x, w, dilations, gh, gw, bias, activation, out, border)
    elif path == "winograd":
        correlate_winograd(x, w, gh, gw, bias, activation, out, border)
    elif path in GEMM_PATHS:
        correlate_gemm(x, w, strides, dilations, gh, gw, bias, activation, out, border)
    else:
        relu = activation == "relu"
        _correlate_jit(x, w, strides, dilations, gh, gw, path, sum_channels, factors, bias, relu, out, border,
                       input_scale)
        if not relu:
            apply_in_place(out, activation)


# The padded planar copy of a large image is made a piece of rows at a time, just before the
# kernel reads it, instead of whole: a piece of about this many bytes per thread stays in cache,
# and the copy of a 24-megapixel photo (96 MB of float32) is never held at once.
PIECE_BYTES = 2 << 20
# ... for images whose whole copy is larger than this (smaller ones are copied whole, in one
# call). The pieces are made by the threads' bands, in parallel, and stay in cache: medians of 3
# alternating rounds on two threads, whole copies against pieces, 1024x1024x3 * 3x3x3x16 with
# stride 2 6.5-7.3 against 5.0-5.4 ms, with stride 1 9.5-11.2 against 8.3-8.9, 768x768x3 *
# 5x5x3x8 with stride 2 2.5-2.7 against 2.1-2.4; the separable path level (1024x1024x3, 7x7).
WHOLE_COPY_BYTES = 4 << 20


def _correlate_jit(x, w, strides, dilations, gh, gw, path, sum_channels, factors, bias, relu, out, border,
                   input_scale) -> None:
    """The planar and separable paths, through the kernels of :mod:`convfilter._backend`."""
    n_img, height, width, channels = x.shape
    n_in = w.shape[2]
    padded_h = height + gh.pad_before + gh.pad_after
    padded_w = width + gw.pad_before + gw.pad_after
    finish = finish_of(bias, w.shape[3], relu)
    if path == "planar" and w.shape[:3] == (1, 1, 1) and channels == 1 and input_scale is None \
            and padded_h == height and padded_w == width:  # a scaling: no padded copy, no tap list
        args = (read_only(x), w.reshape(-1), *strides, *finish, out)
        run_bands("scale_channel", args, out.shape[1], out.size)
        return
    if path == "separable" and channels == 1 and x.flags.writeable and border == "CONSTANT":
        # one channel: the separable kernel reads the image itself and pads with zeros as it
        # goes (a read-only array would be another type for Numba: those go through the padded
        # copy, as do other borders, whose cells are not zeros)
        source = x.reshape(n_img, height, width)
        name, arguments, work = _separable_call(factors, padded_h, padded_w, strides, dilations, finish, out)
        run_bands(name, arguments(source, (gh.pad_before, gw.pad_before), out), out.shape[1], work)
        return
    padder, extra, phases = "pad_planar", (), 1
    if input_scale is not None:  # integer samples, several channels with the same kernels
        values = np.arange(256, dtype=np.float32) / np.float32(input_scale)  # what a float image holds
        padder, extra = "pad_planar_channel_sum_scaled", (values,)
    elif sum_channels:
        padder = "pad_planar_channel_sum"
    elif path == "planar" and strides[1] > 1 and border == "CONSTANT":
        phases = strides[1]  # the copy's columns dealt into phases: the loops read consecutive cells
        padder, extra = "pad_planar_phases", (phases,)
    planes, copy_w = n_in * phases, -(-padded_w // phases)
    piece_rows = _piece_rows(n_in, padded_h, padded_w, out.shape[1], strides[0], w.shape[0], dilations[0])
    if border != "CONSTANT" or piece_rows is None:
        padded = np.empty((n_img, planes, padded_h, copy_w), np.float32)
        _backend.kernel(padder, padded.size)(read_only(x), *extra, gh.pad_before, gw.pad_before, padded)
        fill_border(padded, gh.pad_before, gw.pad_before, height, width, border)
        source = padded.reshape(n_img, planes * padded_h, copy_w)
        name, arguments, work = _kernel_call(path, w, factors, padded_h, padded_w, strides, dilations, finish, out,
                                             phases)
        run_bands(name, arguments(source, (0, 0), out), out.shape[1], work, slowness=_slowness(path))
        return
    piece_h = _piece_height(piece_rows, strides[0], w.shape[0], dilations[0])
    name, arguments, work = _kernel_call(path, w, factors, piece_h, padded_w, strides, dilations, finish, out,
                                         phases)
    band_rows = _band_piece_rows(out.shape[1], work)
    if band_rows < piece_rows:  # bands narrower than a piece: a piece per band, no rows copied in vain
        piece_rows, piece_h = band_rows, _piece_height(band_rows, strides[0], w.shape[0], dilations[0])
        name, arguments, work = _kernel_call(path, w, factors, piece_h, padded_w, strides, dilations, finish, out,
                                             phases)
    # both kernels are chosen for the whole image's work, as if it were done in one call; the
    # convolution first, as it does the most work: once it brings in Numba, the copy's kernel
    # costs Numba only its load
    kernel = _backend.kernel(name, work)
    fill = _backend.kernel(padder, n_img * planes * padded_h * copy_w)
    run_bands(_pieces_of_band, (x, fill, extra, gh, gw, kernel, arguments, piece_rows, piece_h, strides[0],
                                (planes, copy_w), out), out.shape[1], work, slowness=_slowness(path))


# The direct loops' unit of work (an output and a tap) takes about this many times a matrix
# product's multiply-add (a multiply and an add, rounded each, at 25-35 G a second on one core of
# a 2-vCPU Emerald Rapids, against the blocked kernel's 60-110 G fused multiply-adds): their
# calls run on threads from half the work (MIN_PARALLEL_WORK / 2; from 5 million, two bands).
PLANAR_SLOWNESS = 2.0


def _slowness(path: str) -> float:
    """The ``slowness`` of :func:`~convfilter.threads.run_bands` for a call of ``path``."""
    return PLANAR_SLOWNESS if path == "planar" else 1.0


def _piece_rows(n_in: int, padded_h: int, padded_w: int, out_h: int, sh: int, fh: int, dh: int) -> int | None:
    """Output rows per piece of the padded copy, a multiple of four (so the separable kernel's
    groups of rows start where they would in one call over the band); None: copy it whole."""
    if n_in * padded_h * padded_w * 4 <= WHOLE_COPY_BYTES:
        return None
    halo = (fh - 1) * dh + 1 - sh  # rows a piece reads beyond its own output rows' strides
    row_bytes = n_in * padded_w * 4
    rows = max(PIECE_BYTES // row_bytes - halo, 2 * halo, 4) // sh
    rows = -(-rows // 4) * 4
    if rows >= out_h // 2:  # pieces as large as the band: nothing to gain
        return None
    return rows


def _band_piece_rows(out_h: int, work: float, min_rows: int = 1) -> int:
    """Output rows of the widest band of :func:`~convfilter.threads.run_bands`, rounded up to a
    multiple of four: pieces of this many rows are one per band. A piece copies the rows its
    ``piece_rows`` read, so larger pieces than the band would copy rows no output needs (measured
    on one thread: 1024x1024x3 * 3x3x3x16 with stride 2, bands of 21-22 rows in pieces of 84,
    the copies took 5.4 ms, against 1.9 for the whole copy)."""
    edges = band_edges(out_h, work, min_rows)
    widest = max(b - a for a, b in zip(edges, edges[1:]))
    return -(-widest // 4) * 4


def _piece_height(piece_rows: int, sh: int, fh: int, dh: int) -> int:
    """Rows of the padded copy that a piece of ``piece_rows`` output rows reads."""
    return (piece_rows - 1) * sh + (fh - 1) * dh + 1


def _pieces_of_band(x, fill, extra, gh, gw, kernel, arguments, piece_rows, piece_h, sh, copy_shape, out, start,
                    stop):
    """Output rows ``start .. stop`` of every image, a piece of ``piece_rows`` rows at a time: the
    rows of the padded copy (``copy_shape``: its planes and their width) that a piece reads are
    made (by ``fill``) into a buffer of this band, then ``kernel`` runs over them. Each image row
    lands in the buffer with the values the whole copy would hold, so the result is the same
    bits as one call over the whole copy."""
    height = x.shape[1]
    planes, copy_w = copy_shape
    buffer = np.empty((1, planes, piece_h, copy_w), np.float32)
    source = buffer.reshape(1, planes * piece_h, copy_w)
    for n in range(x.shape[0]):
        for lo in range(start, stop, piece_rows):
            hi = min(lo + piece_rows, stop)
            first = lo * sh - gh.pad_before  # the image row at the top of the piece (negative: padding)
            rows = x[n : n + 1, max(first, 0) : max(min(first + piece_h, height), 0)]
            if rows.shape[1]:
                fill(read_only(rows), *extra, max(-first, 0), gw.pad_before, buffer)
            else:  # a piece wholly inside the padding
                buffer[...] = 0.0
            kernel(*arguments(source, (0, 0), out[n : n + 1, lo:hi]), 0, hi - lo)


def read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view of ``x``: Numba compiles writable and read-only arrays apart, so kernels
    that only read an input always get this kind (decoded images are read-only, computed ones
    are not) and keep one compiled signature."""
    view = x.view()
    view.flags.writeable = False
    return view


def finish_of(bias: np.ndarray | None, channels: int, relu: bool) -> tuple[np.ndarray, bool, bool]:
    """The kernels' last arguments ``(bias, add_bias, relu)``: always a float32 bias vector (zeros,
    unused, without a bias) and two bools, so that every call has the one compiled signature."""
    return np.zeros(channels, np.float32) if bias is None else bias, bias is not None, bool(relu)


def _kernel_call(path, w, factors, padded_h, padded_w, strides, dilations, finish, out, phases=1):
    """``(kernel name, arguments(source, pads, out), work)`` of the planar or separable path over a
    padded planar source ``padded_h`` rows high per channel (for the planar path, with its
    columns in ``phases`` phases: see :func:`phase_taps`)."""
    if path == "separable":
        return _separable_call(factors, padded_h, padded_w, strides, dilations, finish, out)
    return _direct_call(w, padded_h, strides, dilations, finish, out, phases)


def phase_taps(taps: np.ndarray, padded_h: int, phases: int) -> np.ndarray:
    """The direct path's taps on a copy whose columns are dealt into ``phases`` phases (plane
    ``c*phases + q % phases`` holds padded column ``q`` of channel ``c`` at ``q // phases``): with
    a column stride of ``phases``, output ``j`` reads column ``v*dw + j*phases``, which is column
    ``(v*dw) // phases + j`` of one phase plane. The same cells in the same order, so the same
    bits, read one after the other instead of ``phases`` apart (measured on one thread:
    1024x1024x3 * 3x3x3x16 with stride 2, 24.8 -> 7.8 ms)."""
    channel, row = np.divmod(taps[:, 0], padded_h)
    column = taps[:, 1]
    return np.stack([(channel * phases + column % phases) * padded_h + row, column // phases], 1)


def _direct_call(w, padded_h, strides, dilations, finish, out, phases=1):
    """The direct path: one tap list for all filters (the positions where any filter is nonzero),
    so that filters share the loads of their source rows."""
    taps, weights = direct_taps(w, padded_h, dilations, phases)
    if phases > 1:
        strides = (strides[0], strides[1] // phases)

    def arguments(rows_view, pads, target):
        return (rows_view, taps, weights, *strides, *finish, target)

    return "correlate_planar", arguments, out.size * taps.shape[0]


def _separable_call(factors, padded_h, padded_w, strides, dilations, finish, out):
    """The separable path: column taps down the rows of each channel of the source (the padded
    planar input viewed as (N, C*Hp, Wp) with pads (0, 0), or a one-channel image (N, H, W)
    with its top and left padding), row taps along the scratch row they produce."""
    cols, rows = factors
    n_in = cols.shape[1]
    (sh, sw), (dh, dw) = strides, dilations
    col_taps, col_weights = tap_lists(cols, dh, padded_h, vertical=True)
    row_taps, row_weights = tap_lists(rows, dw, padded_h, vertical=False)
    # four output rows per column pass when their taps overlap (stride 1), else two
    group_taps, group_weights = row_group_taps(cols, 4 if sh == 1 else 2, sh, dh, padded_h)

    def arguments(source, pads, target):
        return (source, *pads, col_taps, col_weights, group_taps, group_weights, row_taps, row_weights, sh, sw,
                padded_w, *finish, target)

    n_img, out_h, out_w, n_out = out.shape
    work = n_img * out_h * n_out * n_in * (col_taps.shape[2] * padded_w + row_taps.shape[2] * out_w)
    return "correlate_separable", arguments, work


# --- the matrix-product paths ----------------------------------------------------------------

# Floats in one im2col tile: 64 Ki floats (256 KiB) stay in a core's L2 cache while BLAS
# reads them, next to its own packed blocks (measured: 256 KiB tiles as fast as 1 MiB ones,
# the whole image as one tile 20-40% slower).
TILE_FLOATS = 1 << 16
# ... but at least this many output pixels: BLAS packs the whole (fh*fw*C, F) filter matrix on
# every call, which a few pixels cannot repay (measured: 7x7x512x512 filters on a 7x7 image
# took 7x longer in tiles of 2 pixels than in one tile).
MIN_TILE_PIXELS = 512


def rows_holding(pixels: int, row_pixels: int) -> int:
    """The fewest rows of ``row_pixels`` pixels that hold ``pixels``: the least rows of a band
    that must cover a tile (or, on the blocked path, enough pixels to repay reading the filters)."""
    return -(-pixels // row_pixels)


# The zero-padded NHWC copy the matrix-product paths read is written into a buffer each calling
# thread keeps (up to this many floats): a fresh 50 MB array costs more in page faults than
# the copy itself (measured: 10 ms against 4 ms for a batch of eight 224x224x32 maps).
SCRATCH_FLOATS = 1 << 24
_scratch = threading.local()


def thread_buffer(name: str, size: int) -> np.ndarray:
    """``size`` floats of this thread's buffer ``name``, kept for the thread's next call (grown
    when too small): memory written before, where a fresh array costs a page fault per 4 KB."""
    buffer = getattr(_scratch, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, np.float32)
        setattr(_scratch, name, buffer)
    return buffer[:size]


# A copy of at most this many floats (128 KiB, in L2) is zeroed whole before the image goes in:
# each numpy call costs a microsecond or two more than zeroing a few strips of a small map.
SMALL_COPY_FLOATS = 1 << 15


def padded_copy(x, gh: AxisGeometry, gw: AxisGeometry, border: str, extra: tuple[int, int] = (0, 0)) -> np.ndarray:
    """``x`` padded for the geometries (``x`` itself when nothing is padded), plus ``extra``
    rows and columns of zeros at the bottom and right; the zeros of a CONSTANT border go into
    this thread's reused buffer, valid until its next call."""
    (top, bottom), (left, right) = (gh.pad_before, gh.pad_after), (gw.pad_before, gw.pad_after)
    if not any((top, bottom, left, right, *extra)):
        return x
    n_img, height, width, channels = x.shape
    if border != "CONSTANT" and any(extra):
        bordered = padded_copy(x, gh, gw, border)
        return np.pad(bordered, ((0, 0), (0, extra[0]), (0, extra[1]), (0, 0)))
    bottom, right = bottom + extra[0], right + extra[1]
    shape = (n_img, height + top + bottom, width + left + right, channels)
    size = math.prod(shape)
    if border != "CONSTANT" or size > SCRATCH_FLOATS:
        return pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), border)
    padded = thread_buffer("buffer", size).reshape(shape)
    if size <= SMALL_COPY_FLOATS:  # zeros everywhere, then the image: two numpy calls instead of five
        padded.fill(0.0)
    else:
        padded[:, :top] = 0.0
        padded[:, top + height :] = 0.0
        padded[:, top : top + height, :left] = 0.0
        padded[:, top : top + height, left + width :] = 0.0
    padded[:, top : top + height, left : left + width] = x
    return padded


# A fresh result of more than 32 MB costs its page faults: the C library maps such blocks anew
# for each array and returns them on free, and the kernel zeroes every page on first touch (a
# new 35 MB array, 1x427x640x3 * 3x3x3x32's output, took 5 ms to fill against 1.4 ms for
# memory written before; smaller blocks are reused by the C library itself). So a result of
# RESULT_MIN_FLOATS to RESULT_MAX_FLOATS floats is written into the memory of an earlier result
# that nothing refers to any more. KEPT_RESULTS such blocks are kept (at most 256 MB, only in
# a process that made results that large): two, because ``y = conv2d(x, w)`` in a loop still
# holds the last result while the next is made. One that a caller still holds, or a view of
# it, is never handed out again.
RESULT_MIN_FLOATS = 1 << 23
RESULT_MAX_FLOATS = 1 << 25
KEPT_RESULTS = 2
_kept_results: list[np.ndarray] = []
_kept_lock = threading.Lock()


def result_array(shape) -> np.ndarray:
    """An uninitialised float32 array of ``shape`` for a call's result (see :data:`KEPT_RESULTS`)."""
    size = math.prod(shape)
    if not RESULT_MIN_FLOATS <= size <= RESULT_MAX_FLOATS:
        return np.empty(shape, np.float32)
    with _kept_lock:
        for block in _kept_results:
            # referred to by the list, ``block`` and getrefcount's argument only: nobody holds it
            if block.size >= size and sys.getrefcount(block) <= 3:
                return block[:size].reshape(shape)
        block = np.empty(size, np.float32)
        _kept_results.append(block)
        if len(_kept_results) > KEPT_RESULTS:
            del _kept_results[0]
        return block.reshape(shape)


def window_view(source, out_hw, window, strides, dilations) -> np.ndarray:
    """The read-only (N, H_out, W_out, fh, fw, C) view of every output pixel's window in the padded
    NHWC ``source``, in the (u, v, c) order of the filter matrix's rows: what im2col copies."""
    s_n, s_h, s_w, s_c = source.strides
    (sh, sw), (dh, dw) = strides, dilations
    shape = (source.shape[0], *out_hw, *window, source.shape[3])
    steps = (s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c)
    if not source.flags.c_contiguous:
        return as_strided(source, shape=shape, strides=steps, writeable=False)
    view = np.ndarray(shape, source.dtype, buffer=source, strides=steps)  # as_strided's work in half the time
    view.flags.writeable = False
    return view


# A 1x1 kernel with a stride reads its pixels in place, one product per output row (the rows
# of a strided view are rows BLAS can read), while its (C, F) filter matrix is at most this many
# floats: BLAS packs the filters again for every row, which costs more than copying the pixels
# once the filters outgrow L2 (medians of 3 alternating rounds, view against copied tiles:
# 224x224x256 * 1x1x256x64 s2 5.2 -> 4.3 ms, 512x512x512 * 1x1x512x16 19.9 -> 14.8,
# 112x112x64 * 1x1x64x64 0.42 -> 0.29; at 64 Ki floats 40x40x256 * 1x1x256x256 0.52 -> 0.50,
# 224x224x512 * 1x1x512x128 11.4 -> 10.2; above, 56x56x512 * 1x1x512x256 1.35 -> 1.51,
# 56x56x512 * 1x1x512x512 2.5 -> 3.0). The bits were the same as the copied tiles' in every
# case measured.
STRIDED_VIEW_FLOATS = 1 << 16


def reads_in_place(w_shape, strides) -> bool:
    """Whether the matmul path multiplies the image's pixels where they are, without copying
    them into tiles: a 1x1 kernel with stride 1, or with a stride and a small filter matrix."""
    fh, fw, n_in, n_out = w_shape
    return fh == fw == 1 and (tuple(strides) == (1, 1) or n_in * n_out <= STRIDED_VIEW_FLOATS)


def finishing(bias, activation: str, n_out: int, size: int):
    """``(kernel, bias, add_bias, relu)`` for :func:`finish_tile`, the bias and the ReLU of a
    matrix-product path's tiles in one pass (``_jit.finish_rows`` or its numpy twin, chosen for
    the call's ``size`` output floats); None when there is neither."""
    relu = activation == "relu"
    if bias is None and not relu:
        return None
    return (_backend.kernel("finish_rows", size), *finish_of(bias, n_out, relu))


def finish_tile(target, finish, activation: str) -> None:
    """A tile's bias and ReLU by ``finish`` (see :func:`finishing`), then any other activation in
    place, while the tile is in cache."""
    if finish is not None:
        kernel, bias, add_bias, relu = finish
        if target.flags.c_contiguous:  # its rows as one matrix: a view
            kernel(target.reshape(-1, target.shape[-1]), bias, add_bias, relu)
        else:  # (as one matrix a copy) numpy's twin, on the tile as it is
            _numpy_kernels.finish_rows(target, bias, add_bias, relu)
        if relu:
            return
    apply_in_place(target, activation)


def correlate_gemm(x, w, strides, dilations, gh: AxisGeometry, gw: AxisGeometry, bias, activation,
                   out, border: str = "CONSTANT") -> None:
    """The matmul and im2col paths: ``out[pixels] = windows(pixels) @ w.reshape(fh*fw*C, F)``.

    A 1x1 kernel multiplies the image's pixels in place (:func:`reads_in_place`: with a stride,
    one product per output row of the strided view); otherwise the windows of a tile of output
    pixels are copied into a (pixels, fh*fw*C) buffer, in the (u, v, c) order of ``w``'s rows.
    Bias, ReLU and any other in-place ``activation`` are applied to each tile of the output
    while it is in cache. The windows read a padded NHWC copy (zeros, or the cells of
    ``border``) when the geometry pads.
    """
    n_img, height, width, channels = x.shape
    fh, fw, _, n_out = w.shape
    source = padded_copy(x, gh, gw, border)
    matrix = w.reshape(fh * fw * channels, n_out)
    in_place = reads_in_place(w.shape, strides)
    out_h = out.shape[1]
    finish = finishing(bias, activation, n_out, out.size)
    if n_img * out_h * out.shape[2] <= SMALL_MAP_PIXELS:
        correlate_small_map(source, w, strides, dilations, finish, activation, out)
        return
    args = (source, matrix, (fh, fw), strides, dilations, in_place, finish, activation, out)
    # bands run over the rows of all images, so that a batch of small images uses every thread;
    # a band is at least one tile's worth of pixels (BLAS packs all the filters on every call)
    run_bands(_gemm_band, args, n_img * out_h, out.size * matrix.shape[0], blas=True,
              min_rows=rows_holding(MIN_TILE_PIXELS, out.shape[2]))


def quiet_arithmetic(band):
    """Run a BLAS band as the compiled kernels run: inf and NaN in, inf and NaN out, no warning.

    numpy warns ("invalid value encountered in matmul") where ``inf * 0`` meets
    in a product; the other paths give the same values silently.
    """
    @functools.wraps(band)
    def quiet(*args):
        with np.errstate(invalid="ignore", over="ignore"):
            band(*args)
    return quiet


@quiet_arithmetic
def _gemm_band(source, matrix, window, strides, dilations, in_place, finish, activation, out, start, stop) -> None:
    """Output rows ``start .. stop`` (counted over all images) of :func:`correlate_gemm`."""
    _, out_h, out_w, n_out = out.shape
    depth = matrix.shape[0]
    fh, fw = window
    channels = source.shape[3]
    # a 1x1 kernel's windows are its pixels: a view of every stride-th one
    windows = window_view(source, (out_h, out_w), window, strides, dilations)
    pixels_in_place = windows.reshape(windows.shape[:3] + (channels,)) if in_place else None
    # a tile is whole output rows when they fit, else part of one row
    tile_pixels = max(TILE_FLOATS // depth, MIN_TILE_PIXELS)
    tile_rows = min(max(1, tile_pixels // out_w), out_h, stop - start)
    tile_cols = min(out_w, tile_pixels)
    buffer = None if in_place else np.empty(tile_rows * tile_cols * depth, np.float32)
    row = start
    while row < stop:
        n, i = divmod(row, out_h)
        rows = min(tile_rows, stop - row, out_h - i)
        for j in range(0, out_w, tile_cols):
            cols = min(tile_cols, out_w - j)
            target = out[n, i : i + rows, j : j + cols]
            if in_place:
                pixels = pixels_in_place[n, i : i + rows, j : j + cols]
                if strides == (1, 1):  # whole image rows are one matrix; strided ones a product per row
                    pixels, target = pixels.reshape(rows * cols, channels), target.reshape(rows * cols, n_out)
            else:
                target = target.reshape(rows * cols, n_out)
                pixels = buffer[: rows * cols * depth].reshape(rows * cols, depth)
                pixels.reshape(rows, cols, fh, fw, channels)[...] = windows[n, i : i + rows, j : j + cols]
            np.matmul(pixels, matrix, out=target)
            finish_tile(target, finish, activation)
        row += rows


# A map of at most this many output pixels (a batch's, together) is one tile. Bands of its rows
# would each pack the whole filter matrix for a few pixels (measured: 7x7x128 * 7x7x128x128 with
# stride 2 took 0.53 ms in two bands of two rows, 0.35 ms in one product). Its product is one
# band; when the call is large enough for threads, the sum is split instead, into DEPTH_PARTS
# products of equal depth run as bands and added in their order, so the bits do not depend on
# the threads (7x7x512 * 3x3x512x512: 3.0 -> 2.2 ms).
SMALL_MAP_PIXELS = MIN_TILE_PIXELS
DEPTH_PARTS = 2
MIN_PART_DEPTH = 64  # ... each at least this deep
# ... from this many multiply-adds: one product of a small map keeps BLAS at full speed, so even
# a product of under a band's work repays a second thread, once it outweighs handing a part to
# the pool and the two products slowing each other (medians of 9 alternating rounds, one part
# against two: 7.2 million multiply-adds 0.25 -> 0.35-0.42 ms, 9.8 million 0.32 -> 0.38,
# 12.8 million 0.45 -> 0.44, 19.7 million 0.78 -> 0.67, 28.9 million 0.71 -> 0.59,
# 116 million 4.0 -> 2.3)
SMALL_MAP_PARALLEL_WORK = 15_000_000


def correlate_small_map(source, w, strides, dilations, finish, activation, out) -> None:
    """:func:`correlate_gemm` for a map of one tile: its windows copied once (for a 1x1 kernel
    with stride 1, the pixels as they are), multiplied with the filters in one product, or
    in :data:`DEPTH_PARTS` products of parts of the sum when the call is worth threads."""
    fh, fw, channels, n_out = w.shape
    n_img, out_h, out_w, _ = out.shape
    depth = fh * fw * channels
    if fh == fw == 1 and strides == (1, 1):
        windows = source.reshape(-1, channels)
    else:
        windows = np.empty((n_img * out_h * out_w, depth), np.float32)
        windows.reshape(n_img, out_h, out_w, fh, fw, channels)[...] = window_view(
            source, (out_h, out_w), (fh, fw), strides, dilations)
    work = out.size * depth
    parts = DEPTH_PARTS if work >= SMALL_MAP_PARALLEL_WORK and depth >= MIN_PART_DEPTH * DEPTH_PARTS else 1
    edges = [depth * p // parts for p in range(parts + 1)]
    partial = np.empty((parts - 1, windows.shape[0], n_out), np.float32)
    target = out.reshape(-1, n_out)
    # parts run on threads from SMALL_MAP_PARALLEL_WORK on, below the bands' own threshold: the
    # work given is at least a band's per part, so that each part is a band
    band = thread_pool.band_work()
    run_bands(_depth_part, (windows, w.reshape(depth, n_out), edges, target, partial), parts,
              work if parts == 1 else max(work, parts * band), blas=True)
    for product in partial:
        target += product
    finish_tile(target, finish, activation)


@quiet_arithmetic
def _depth_part(windows, matrix, edges, target, partial, start, stop) -> None:
    """Parts ``start .. stop`` of :func:`correlate_small_map`'s sum: columns ``edges[p] ..
    edges[p + 1]`` of the windows times those rows of the filters, the first into ``target``."""
    for part in range(start, stop):
        lo, hi = edges[part], edges[part + 1]
        np.matmul(windows[:, lo:hi], matrix[lo:hi], out=target if part == 0 else partial[part - 1])


# Output floats in one tile of the shifted path (its sum and one tap's product, 512 KiB each,
# in a core's L2 cache). Measured on one core: for 16 filters on a 224x224 image such tiles ran
# 1.7x faster than tiles of 8 Ki floats (and 1.4x faster than im2col); for 64-256 filters the
# tile size moved the time within the noise, and im2col was as fast or up to 10% faster.
SHIFT_TILE_FLOATS = 1 << 17


def correlate_shifted(x, w, dilations, gh: AxisGeometry, gw: AxisGeometry, bias, activation, out,
                      border: str = "CONSTANT") -> None:
    """The shifted path (stride 1): ``sum over (u, v) of pixels[r + u*dh*Wp + v*dw] @ w[u, v]``.

    ``pixels`` is the padded NHWC copy viewed as one (N*Hp*Wp, C) matrix and ``r`` counts
    output pixels in padded-width coordinates, so every tap's operand is a contiguous run
    of rows: BLAS reads the image as it is. Kept output columns only read their own image
    (``out_w + (fw-1)*dw == Wp``); the ``Wp - out_w`` others, dropped, may read the next
    image or stop early at the end of the batch. Bias and activation are applied as each
    tile is stored.
    """
    n_img = x.shape[0]
    fh, fw, channels, n_out = w.shape
    source = padded_copy(x, gh, gw, border)
    padded_h, padded_w = source.shape[1], source.shape[2]
    pixels = source.reshape(n_img * padded_h * padded_w, channels)
    taps = w.reshape(fh * fw, channels, n_out)
    offsets = [u * dilations[0] * padded_w + v * dilations[1] for u in range(fh) for v in range(fw)]
    finish = finishing(None, activation, n_out, out.size)  # the ReLU (the bias is added as a tile is copied out)
    args = (pixels, taps, offsets, padded_h, padded_w, bias, finish, activation, out)
    run_bands(_shifted_band, args, n_img * gh.out, out.size * fh * fw * channels, blas=True,
              min_rows=rows_holding(MIN_TILE_PIXELS, out.shape[2]))


@quiet_arithmetic
def _shifted_band(pixels, taps, offsets, padded_h, padded_w, bias, finish, activation, out, start, stop) -> None:
    """Output rows ``start .. stop`` (counted over all images) of :func:`correlate_shifted`."""
    _, out_h, out_w, n_out = out.shape
    tile_rows = min(max(1, SHIFT_TILE_FLOATS // (padded_w * n_out)), out_h, stop - start)
    total = np.empty((tile_rows * padded_w, n_out), np.float32)
    product = np.empty_like(total)
    row = start
    while row < stop:
        n, i = divmod(row, out_h)
        rows = min(tile_rows, stop - row, out_h - i)
        first = (n * padded_h + i) * padded_w
        size = rows * padded_w
        for k, offset in enumerate(offsets):
            window = pixels[first + offset : first + offset + size]  # shorter at the end of the batch
            m = window.shape[0]
            if k == 0:
                np.matmul(window, taps[k], out=total[:m])
            else:
                np.matmul(window, taps[k], out=product[:m])
                total[:m] += product[:m]
        store(total[:size].reshape(rows, padded_w, n_out)[:, :out_w], out[n, i : i + rows], bias, finish, activation)
        row += rows


def store(kept: np.ndarray, target: np.ndarray, bias, finish, activation: str) -> None:
    """``target = activation(kept + bias)``: one pass for the copy and the bias, then the
    activation in place while the tile is in cache (the ReLU by ``finish``, see :func:`finishing`)."""
    if bias is not None:
        np.add(kept, bias, out=target)
    else:
        target[...] = kept
    finish_tile(target, finish, activation)


# --- Winograd F(2x2, 3x3) and F(2x2, 5x5) ---------------------------------------------------
# Each 2x2 block of outputs of a 3x3 kernel (stride 1, no dilation) is A^T [(G g G^T) * (B^T d B)] A
# for the 4x4 input block d: 16 products per block and channel instead of 36, as 16 matrix
# products (blocks, C) @ (C, F) by BLAS. The transforms are sums, differences and halvings in
# float32, so the rounding scales with the largest sum of |x| * |w| in each 2x2 block rather
# than with each output's own (measured: up to 7 ulps of it; the tests allow 16); against
# TensorFlow, within 1e-6 of the output's magnitude.
# A 5x5 kernel's blocks are 6x6, 36 products per block and channel instead of 100, with the
# points 0, 1, -1, 2, -1/2 (and infinity): its transforms multiply by 1/2 to 16 and by 1/3 and
# 1/15, and the output transform cancels more, so it rounds several times more than the 3x3
# one: 1e-6 to 3e-6 of the output's magnitude against float64 sums (float32 loops 2e-7 to 4e-7)
# on 14x14 to 18x18 maps of 16-256 channels (of the point sets tried, the nearest; 0, +-1, +-2
# gave up to 6e-6).
# Blocks per chunk (of a 3x3 kernel's; a 5x5's take 16/36 as many): its transformed input and
# products stay in a core's L2 cache.
WINOGRAD_BLOCKS = 256
# A call's transformed filters, and each band's transformed inputs and products, are written
# into buffers their thread keeps (see thread_buffer) up to this many floats each (16 MB; a 5x5
# chunk of 512 channels takes 7.5 MB, a 5x5x256x256 bank's transform 9.4 MB). Fresh arrays
# cost each call a page fault for every 4 KB: 140-870 faults a call on layers of 28x28 to
# 112x112 maps, two threads on a Zen 5.
WINOGRAD_SCRATCH_FLOATS = 1 << 22


def scratch_array(name: str, shape) -> np.ndarray:
    """An uninitialised float32 array of ``shape`` in this thread's buffer ``name`` (a fresh one
    above WINOGRAD_SCRATCH_FLOATS), valid until the thread next asks for ``name``."""
    size = math.prod(shape)
    if size > WINOGRAD_SCRATCH_FLOATS:
        return np.empty(shape, np.float32)
    return thread_buffer(name, size).reshape(shape)


# The cost model considers the winograd path from this many input channels and filters.
WINOGRAD_MIN_CHANNELS = 16
# ... and on output maps of at least this many rows and columns.
WINOGRAD_MIN_SIZE = 8
# A 5x5 kernel's from this many channels and filters, and this many 2x2 blocks in the batch (a
# 28x28 map's): on smaller layers the 36 transformed filters cost more than the products save
# (two threads on a Zen4, forced paths in alternation, winograd against blocked:
# 1x14x14x256 * 5x5x256x256 6.1 against 3.7 ms, 1x14x14x512 * 5x5x512x512 17.3 against 16.6,
# 56x56x32 * 5x5x32x32 1.27 against 1.03, 28x28x256 * 5x5x256x64 4.07 against 3.74; where it
# is offered: 28x28x128 * 5x5x128x128 3.90 against 4.48, 28x28x256 * 5x5x256x256 9.2 against
# 13.7, 56x56x128 * 5x5x128x128 9.7 against 13.7, 8x14x14x256 * 5x5x256x256 20.9 against 26.4,
# 8x14x14x512 * 5x5x512x512 76 against 104, 56x56x256 * 5x5x256x128 19.8 against 29.1).
# Left out though faster: 56x56x64 * 5x5x64x64 (2.53 against 3.35 ms), 28x28x64 * 5x5x64x64
# (0.85 against 0.92). On a Zen 5 (round 15 of docs/performance.md) the offered layers but one
# were faster on it too (56x56x128 * 5x5x128x128 7.6 against 8.7 ms), and 28x28x128 *
# 5x5x128x128 slower (3.2 against 2.6): left as measured on the Zen4.
WINOGRAD5_MIN_CHANNELS = 128
WINOGRAD5_MIN_BLOCKS = 14 * 14


WINOGRAD_KERNELS = ((3, 3), (5, 5))


def winograd_fits(w_shape, strides, dilations) -> bool:
    """True for a 3x3 or 5x5 kernel with stride 1 and no dilation, the shapes of the winograd path."""
    return tuple(w_shape[:2]) in WINOGRAD_KERNELS and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)


def winograd_offered(w_shape, strides, dilations, out_shape) -> bool:
    """Whether the cost model weighs the winograd path for this layer (see WINOGRAD_MIN_CHANNELS
    and WINOGRAD5_MIN_CHANNELS): its transforms round even an identity or a box kernel, which the
    other paths return exactly, and mix every weight into each output, which a map of a few
    pixels (mostly padding) would show; they pay on many-channel layers only."""
    if not winograd_fits(w_shape, strides, dilations):
        return False
    n_img, out_h, out_w = out_shape[:3]
    least = min(w_shape[2], w_shape[3])
    if w_shape[0] == 5:
        return least >= WINOGRAD5_MIN_CHANNELS and n_img * -(-out_h // 2) * -(-out_w // 2) >= WINOGRAD5_MIN_BLOCKS
    return least >= WINOGRAD_MIN_CHANNELS and min(out_h, out_w) >= WINOGRAD_MIN_SIZE


def winograd_matrices(fh: int) -> int:
    """The transformed matrices of the winograd path for an fh x fh kernel: 16 for 3x3, 36 for 5x5."""
    return (fh + 1) ** 2


def winograd_chunk_rows(blocks_w: int, matrices: int) -> int:
    """Block rows in a chunk of the winograd path: WINOGRAD_BLOCKS blocks of a 3x3 kernel (16/36
    as many of a 5x5 kernel's 36 matrices), at least one row of ``blocks_w`` blocks."""
    return max(1, WINOGRAD_BLOCKS * 16 // matrices // blocks_w)


def winograd_kernels(fh: int) -> tuple[str, str, str]:
    """The names of the input, output and filter transforms for an fh x fh kernel."""
    prefix = "winograd" if fh == 3 else "winograd5"
    return f"{prefix}_input", f"{prefix}_output", f"{prefix}_filters"


# The filter transform reads 9 and writes 16 floats per (channel, filter) pair (25 and 36 for a
# 5x5 kernel), in sums, differences and scalings (the kernels ``winograd_filters`` and
# ``winograd5_filters``): memory-bound, it counts this many times its transformed floats as
# work, in a matrix product's multiply-adds, so that a bank of 256x256 runs in bands on two
# threads (medians of 15 alternating rounds, one thread against two: 1x28x28x256 * 3x3x256x256
# 4.24 -> 3.93 ms, 1x14x14x256 * 3x3x256x256 1.90 -> 1.76).
WINOGRAD_FILTER_WORK_SCALE = 16


def winograd_filters(w: np.ndarray) -> np.ndarray:
    """The (16, C, F) transformed filters ``G g G^T`` of a (3, 3, C, F) bank (36 of a 5x5 bank),
    float32, in bands of input channels on the band threads, in this thread's buffer (see
    :func:`scratch_array`: valid until its next call).

    Not a (16, 9) by (9, C*F) matrix product, as before: BLAS took 2-4x as long for its few
    multiplies by 0, 1/4, 1/2 and 1 (one process, calls alternating, on a Zen4: 3x3x256x256
    0.62 -> 0.13-0.15 ms alone, 0.72-1.02 -> 0.49 ms inside a call of 1x28x28x256 on one thread).
    """
    out = scratch_array("winograd_filters", (winograd_matrices(w.shape[0]), *w.shape[2:]))
    transform = _backend.kernel(winograd_kernels(w.shape[0])[2], out.size)
    run_bands(transform, (w, out), w.shape[2], out.size * WINOGRAD_FILTER_WORK_SCALE)
    return out


@functools.lru_cache(maxsize=256)
def winograd_span(count: int, width: int, matrices: int = 16) -> int:
    """Rows to allocate for each of the 16 (``count``, ``width``) float32 matrices of a chunk's
    transforms (``matrices`` of them: 36 for a 5x5 kernel): ``count`` plus the fewest extra rows
    (at most 7) that spread the matrices over L1's sets. A block's transform writes (and the
    output transform reads) one row of each of the 16 matrices; at ``count * width`` floats
    apart, a multiple of 4 KB for most shapes (``1x112x112x64 * 3x3x64x64``: 224 blocks of 64
    channels, 56 KB), the 16 rows share the same sets, more than L1 has ways. One process, 11
    alternating rounds on two threads of a Zen4, padded against not: ``8x112x112x64 *
    3x3x64x64`` 26.9 -> 24.9 ms (1.10x), six other winograd layers 0.99-1.02x; the same bits."""
    lines = min(L1_SETS, -(-width * 4 // LINE_BYTES))

    def crowding(span: int) -> int:
        offset = span * width * 4 % (L1_SETS * LINE_BYTES)  # addresses this far apart share a set
        hits = collections.Counter((t * offset // LINE_BYTES + line) % L1_SETS
                                   for t in range(matrices) for line in range(lines))
        return max(hits.values())

    return count + min(range(8), key=lambda extra: (crowding(count + extra), extra))


def correlate_winograd(x, w, gh: AxisGeometry, gw: AxisGeometry, bias, activation, out,
                       border: str = "CONSTANT") -> None:
    """The winograd path: a 3x3 or 5x5 kernel, stride 1 and no dilation, in 2x2 output blocks."""
    n_img, channels, n_out = x.shape[0], x.shape[3], out.shape[3]
    out_h, out_w = out.shape[1], out.shape[2]
    blocks_h, blocks_w = -(-out_h // 2), -(-out_w // 2)
    # each block reads fh + 1 rows and columns from its first: those of the last block exist
    source = padded_copy(x, gh, gw, border, extra=(2 * blocks_h - out_h, 2 * blocks_w - out_w))
    blocks = n_img * blocks_h * blocks_w
    matrices = winograd_matrices(w.shape[0])
    names = winograd_kernels(w.shape[0])
    transform_in = _backend.kernel(names[0], blocks * matrices * channels)
    transform_out = _backend.kernel(names[1], blocks * matrices * n_out)
    bias_vector, add_bias, _ = finish_of(bias, n_out, False)
    finish = finishing(None, activation, n_out, out.size)  # the ReLU (the bias is added by the output transform)
    args = (source, winograd_filters(w), bias_vector, add_bias, finish, activation, out, transform_in, transform_out)
    run_bands(_winograd_band, args, n_img * blocks_h, out.size * w.shape[0] * w.shape[1] * channels, blas=True,
              min_rows=rows_holding(MIN_TILE_PIXELS, 4 * blocks_w))


@quiet_arithmetic
def _winograd_band(source, filters, bias, add_bias, finish, activation, out, transform_in, transform_out,
                   start, stop) -> None:
    """Block rows ``start .. stop`` (counted over all images) of :func:`correlate_winograd`: per
    chunk of blocks, the input transform, 16 (or 36) matrix products (BLAS), the output transform
    with the bias, then the activation while the rows are in cache."""
    _, out_h, out_w, n_out = out.shape
    channels = source.shape[3]
    matrices = filters.shape[0]
    blocks_h, blocks_w = -(-out_h // 2), -(-out_w // 2)
    per_chunk = min(winograd_chunk_rows(blocks_w, matrices), stop - start)
    most = per_chunk * blocks_w
    # the transforms fill (and read) the first rows of each of the matrices, a chunk's blocks
    v_shape = (matrices, winograd_span(most, channels, matrices), channels)
    m_shape = (matrices, winograd_span(most, n_out, matrices), n_out)
    v = scratch_array("winograd_in", v_shape)
    m = scratch_array("winograd_out", m_shape)
    row = start
    while row < stop:
        n, bi = divmod(row, blocks_h)
        rows = min(per_chunk, stop - row, blocks_h - bi)
        count = rows * blocks_w
        transform_in(source, n, bi, rows, blocks_w, v)
        np.matmul(v[:, :count], filters, out=m[:, :count])
        transform_out(m, bias, add_bias, out[n], bi, rows, blocks_w)
        finish_tile(out[n, 2 * bi : min(2 * (bi + rows), out_h)], finish, activation)
        row += rows


# --- blocked: compiled vector products ------------------------------------------------------
# The blocked kernel reads each window row as one run of fw*C floats of a padded copy of the
# images (the image itself when nothing is padded) when each image's copy holds at most
# WHOLE_COPY_BYTES. A larger image is read in place, its padding never copied, in pieces of
# output rows taken by each band as it goes (see _piece_rows): all the units of filters then
# read a piece's rows while they are in cache. Those pieces were copies of the padded image,
# made by each band, until they were measured against whole copies (medians of 5 alternating
# rounds on two threads, whole copies of up to 32 MB against pieces: 224x224x64 * 3x3x64x64
# with stride 2 8.8 against 6.4 ms, 112x112x256 * 3x3x256x64 with stride 2 6.3 against 5.2,
# 224x224x128 * 3x3x128x128 with stride 2 28.1 against 21.2, 112x112x256 * 5x5x256x64 with
# stride 2 14.1 against 13.1, 512x512x16 * 5x5x16x16 18.5 against 17.9, 56x56x512 *
# 3x3x512x128 18.8 against 17.6; pieces of 1 MB or 512 KB did no better than PIECE_BYTES).
# Read in place instead of copied piece by piece (the same bits; both versions in one process,
# whole calls alternating, medians of 31 on two threads on a Zen3): 512x512x16 * 3x3x16x16 with
# stride 2 4.01 -> 3.07 ms, 1024x1024x16 * 3x3x16x16 with stride 2 14.1 -> 12.5, 224x224x32 *
# 5x5x32x32 with stride 2 5.92 -> 5.20, 112x112x256 * 3x3x256x64 with stride 2 8.72 -> 8.43;
# 224x224x64 * 5x5x64x64 with stride 2 0.97-0.98x, 224x224x128 * 3x3x128x128 with stride 2 level.
# A smaller image is read in place too when the edge copy is at most BLOCKED_IN_PLACE_EDGE of its
# columns (one piece a band): its whole copy, made on one thread before the bands start, cost
# more than the bands saved by reading it from cache (both ways in one process, whole calls
# alternating, medians of 7 in 7 rounds on two threads on a 2-vCPU Intel Emerald Rapids, copy
# -> in place, the edge copy's fraction of the columns in brackets: 224x224x16 * 5x5x16x16 with
# stride 2 (0.17) 2.20 -> 1.93 ms, 112x112x16 * 7x7x16x16 (0.25) 2.80 -> 2.36, 56x56x128 *
# 3x3x128x128 with stride 2 (0.27) 2.12 -> 1.79, 112x112x64 * 5x5x64x64 with stride 2 (0.34)
# 4.19 -> 4.00, 56x56x64 * 7x7x64x64 (0.50) 8.28 -> 7.97, 28x28x256 * 3x3x256x64 with stride
# 2 (0.54) 0.76 -> 0.68; 8x28x28x256 * 3x3x256x256 (0.64) level). Where the blocks at the ends
# reach over most of a row, the copy stays: 28x28x512 * 5x5x512x16 with stride 2 (1.21) 1.13
# against 1.20 ms in place, 14x14x256 * 5x5x256x64 (1.57) 1.27 against 1.41, 7x7x128 *
# 7x7x128x128 with stride 2 (1.86) 0.81 against 0.86. So does the copy under a bank of more
# than BLOCKED_IN_PLACE_BANK bytes (the cache model's L2, see blocked_far_lines): read in place,
# each band makes all the units of its rows and reads the whole bank, where the copy's bands
# split the units between them (112x112x64 * 5x5x64x256 with stride 2, a 1.6 MB bank,
# 0.90-0.97x in place; under 1 MB, 56x56x128 * 3x3x128x128 with stride 2, 590 KB, 1.10-1.15x
# in three runs, 112x112x64 * 5x5x64x128 with stride 2, 819 KB, 0.80-0.97x in two).
BLOCKED_IN_PLACE_EDGE = 0.6
BLOCKED_IN_PLACE_BANK = 1 << 20

# A band of the blocked path has at least this many output pixels (16 blocks).
BLOCKED_BAND_PIXELS = 128
# The sums of the output rows the blocked kernel makes together (floats; 128 KiB, in L2 beside
# the piece of filters the rows share; see blocked_group).
BLOCKED_SUM_FLOATS = 1 << 15

# The cost model considers the blocked path from this many input channels: never for images
# (1-4 channels), whose results stay the same bits in every process (see blocked_ready) ...
BLOCKED_MIN_CHANNELS = 8
# A 1x1 kernel from this many input channels (a whole piece of a sum, see _jit.DEPTH_PIECE) and
# up to this many filters: the image is read in place, and the vector products beat BLAS's on
# deep sums over few filters (two threads, medians of 5 alternating rounds, blocked against
# matmul: 112x112x256 * 1x1x256x64 3.0-3.3 against 3.3-4.1 ms, 224x224x256 * 1x1x256x64 with
# stride 2 3.3-3.6 against 4.0-4.2, 28x28x512 * 1x1x512x128 0.63 against 0.67, 512x512x512 *
# 1x1x512x16 with stride 2 9.5 against 12.5). With more filters BLAS was faster (28x28x256 *
# 1x1x256x256 0.75 against 0.71 ms, 8x14x14x512 * 1x1x512x512 5.5 against 4.9), and, before
# the direct runs (below), on shallower sums, too short for the cost of a block (one thread:
# 224x224x128 * 1x1x128x128 26.9 against 21.6 ms, 224x224x32 * 1x1x32x32 2.5 against 1.9); the
# estimate does not see either.
BLOCKED_MIN_POINTWISE_CHANNELS = 256
BLOCKED_MAX_POINTWISE_FILTERS = 128
# Shallower 1x1 kernels take the blocked path without an estimate where its runs make each
# output's whole sum and store it finished (a sum of at most _jit.DEPTH_PIECE products: see
# the kernel), for at most this many filters, at most twice as many as channels, on maps of at
# least BLOCKED_DIRECT_MIN_PIXELS pixels: BLAS packs and writes a block of the product for
# every few products of so shallow a sum. Two threads, medians of 15 calls in 5 alternating
# rounds against matmul, on a Zen3 with AVX2: 224x224x32 * 1x1x32x32 1.67 against 1.78 ms,
# 224x224x64 * 1x1x64x16 1.24 against 2.98, 224x224x16 * 1x1x16x16 0.58 against 0.86, 112x112x32
# * 1x1x32x32 0.49 against 0.69, 56x56x128 * 1x1x128x32 0.52 against 0.68, 28x28x64 * 1x1x64x64
# with stride 2 0.074 against 0.091; 88 such shapes of 28x28 to 224x224 maps, 8-256 channels,
# 8-64 filters and strides 1 and 2 at 0.96-2.4x, median 1.18x. With more filters the output's
# stores cost more than BLAS's (224x224x32 * 1x1x32x128 7.9 against 4.8 ms, 224x224x16 *
# 1x1x16x64 3.0 against 2.1), and on smaller maps the two were level (7x7 and 14x14 maps:
# 0.90-1.08x).
BLOCKED_DIRECT_MAX_FILTERS = 64
BLOCKED_DIRECT_MAX_CHANNELS = 256  # _jit.DEPTH_PIECE (not imported here: that would load Numba)
BLOCKED_DIRECT_MIN_PIXELS = 28 * 28
# ... and up to this many filters, on maps of any size (down to 4 output columns) ...
BLOCKED_MAX_FILTERS = 256
# ... or up to this many for an output of at most BLOCKED_SMALL_OUTPUT_BYTES. With 512 filters
# BLAS's products were faster on every map tried when a run made the sums of one vector of 16
# filters (two threads: 7x7x512 * 5x5x512x512 7.9 against 5.0 ms, 224x224x16 * 3x3x16x512
# stride 2 17.6 against 11.8): a row of the bank is 2 KB, and a vector's filters, one line of
# each row, are more lines that far apart than L2 and the TLB hold. Since the runs of two
# vectors, small outputs are faster on it (two threads, medians of 5 alternating rounds against
# `im2col`: 14x14x16 * 7x7x16x512 0.84 against 1.07 ms, 7x7x512 * 3x3x512x512 1.72 against
# 2.07, 14x14x512 * 5x5x512x512 13.5 against 14.8, 28x28x512 * 3x3x512x512 stride 2 5.5
# against 5.7) and large ones still slower (112x112x16 * 3x3x16x512 stride 2, 6.4 MB of output:
# 3.9 against 3.1; 224x224x16 stride 2 14.2 against 12.1). Between, the cost model chooses.
BLOCKED_WIDE_MAX_FILTERS = 512
BLOCKED_SMALL_OUTPUT_BYTES = 1 << 20


BLOCKED_KERNEL = "correlate_blocked"


def blocked_filters_fit(n_out: int, out_shape) -> bool:
    """Whether the cost model offers the blocked path for ``n_out`` filters and an output of
    ``out_shape`` (see :data:`BLOCKED_MAX_FILTERS`; more only with runs of two vectors of 16,
    measured where they run: with AVX2's runs of 6 pixels by two vectors of 8, 512 filters were
    1.2-1.9x slower than im2col on every map tried, 7x7 to 56x56)."""
    if n_out <= BLOCKED_MAX_FILTERS:
        return True
    from . import _jit

    return (not compiled_for_avx2() and _jit.BLOCKED_WIDE > 1 and n_out <= BLOCKED_WIDE_MAX_FILTERS
            and 4 * math.prod(out_shape) <= BLOCKED_SMALL_OUTPUT_BYTES)


def pointwise_direct(x_shape, w_shape) -> bool:
    """Whether a 1x1 kernel takes the blocked path's direct runs without an estimate (see
    :data:`BLOCKED_DIRECT_MAX_FILTERS`)."""
    fh, fw, n_in, n_out = w_shape
    return (fh == fw == 1 and BLOCKED_MIN_CHANNELS <= n_in <= BLOCKED_DIRECT_MAX_CHANNELS
            and n_out <= min(BLOCKED_DIRECT_MAX_FILTERS, 2 * n_in)
            and x_shape[1] * x_shape[2] >= BLOCKED_DIRECT_MIN_PIXELS)


def blocked_fits(w_shape, out_hw, dilations) -> bool:
    """True when the blocked path can run: its blocks of 4 or more pixels need at least 4 output
    columns, a vector of filters at least 4 of them (the rest of it is zeros), and a window row
    is one run only without dilation across."""
    return out_hw[1] >= 4 and w_shape[3] >= 4 and dilations[1] == 1


def check_blocked(w_shape, out_hw, dilations) -> None:
    if not blocked_fits(w_shape, out_hw, dilations):
        raise ValueError(f"the blocked path needs at least 4 output columns, 4 filters and dilation 1 across, "
                         f"got {out_hw[1]} columns, {w_shape[3]} filters, dilations {tuple(dilations)}")
    if not _backend.compiled_possible():
        raise ValueError("the blocked path runs on Numba's compiled kernels only, and this process uses numpy's")


def blocked_ready() -> bool:
    """Whether :func:`choose_path` may choose the blocked path: it has no numpy twin, so only in
    a process that already runs Numba's kernels (a server, a batch, a network, a loop of calls)
    and has it compiled or in Numba's cache (its first call compiles it, about 2.5 s: after an
    upgrade, ``convfilter warmup`` or a server compiles it once), or that was told to use Numba. A
    short-lived process does not import Numba for it; it takes the BLAS paths, whose results
    agree with it to float32 rounding."""
    if not _backend.compiled_possible():
        return False
    if _backend.get_backend() == "numba":
        return True
    return _backend.numba_imported() and (_backend.loaded(BLOCKED_KERNEL) or _backend.is_cached(BLOCKED_KERNEL))


def blocked_seconds(x_shape, w_shape, out_shape, strides, dilations) -> float:
    """The blocked path's single-thread time estimate (see :data:`COST`)."""
    from ._jit import DEPTH_PIECE, LANES

    n_img, n_in = x_shape[0], x_shape[3]
    fh, fw, _, n_out = w_shape
    out_h, out_w = out_shape[1], out_shape[2]
    # the padded copy's rows and columns (none when nothing is padded: the image is read in place)
    padded_h = max((out_h - 1) * strides[0] + (fh - 1) * dilations[0] + 1, x_shape[1])
    padded_w = max((out_w - 1) * strides[1] + fw, x_shape[2])
    copied = n_img * padded_h * padded_w * n_in if (padded_h, padded_w) != tuple(x_shape[1:3]) else 0
    left = (padded_w - x_shape[2]) // 2
    if copied and blocked_piece_rows(x_shape, w_shape, strides, dilations, padded_h, padded_w, (out_h, out_w),
                                     fw, left) is not None:
        # read in place: only the columns of the blocks at a row's ends are copied
        copied = n_img * x_shape[1] * blocked_layout(out_w, x_shape[2], strides[1], fw, left, n_in)[3] * n_in
    depth = fh * fw * n_in
    row_pixels, blocks = blocked_blocks(out_w)
    vectors = -(-n_out // LANES)  # the last vector of filters is filled up with zeros
    # window rows that read the image (those in the rows of zero padding are skipped), for
    # padding split as SAME splits it
    height, sh, dh = x_shape[1], strides[0], dilations[0]
    pad_top = (padded_h - height) // 2
    window_rows = 0
    for u in range(fh):
        lo, hi = pad_top - u * dh, pad_top - u * dh + height  # i * sh must lie in lo .. hi - 1
        window_rows += max(0, min(out_h, -(-hi // sh)) - max(0, -(-lo // sh)))
    # (block, window row) pairs per vector: fitted on runs of one vector; with runs of two the
    # kernel makes half as many runs, but counted per unit this estimate chose it over
    # winograd for 28x28x64 * 3x3x64x64 (0.56 ms on one thread against winograd's 0.36)
    segments = n_img * window_rows * blocks * vectors
    # lines of filters read once per group of rows and vector, from beyond L2 when it cannot
    # hold the vector's
    lines = n_img * window_rows * vectors * fw * n_in / min(blocked_group(out_w), n_img * out_h)
    far = lines if depth > blocked_far_lines(n_out) else 0
    pages = far * min(1.0, n_out * 4 / PAGE_BYTES) if depth * n_out * 4 > TLB_REACH_BYTES else 0
    tail = depth * LANES if n_out % LANES else 0
    # pieces of a sum per window row: a row's pieces, or a share of a piece of several rows
    run = fw * n_in
    pieces = -(-run // DEPTH_PIECE) if run > DEPTH_PIECE else -(-fh // min(fh, DEPTH_PIECE // run)) / fh
    products = n_img * window_rows * vectors * row_pixels * LANES * fw * n_in
    rate = COST["blocked_rate_avx2" if compiled_for_avx2() else "blocked_rate"]
    return (COST["blocked_call"] + products / rate
            + segments * pieces * COST["blocked_piece"]
            + copied / COST["blocked_padded_rate"]
            + tail / COST["blocked_tail_rate"] + far * COST["blocked_far_line"] + pages * COST["blocked_page"])


# The caches the blocked path's estimate assumes (an L2 of 1 MiB, 8 ways, lines of 64 bytes; a
# second-level TLB of 3072 pages of 4 KiB): those of the machine its constants were fitted on,
# and near enough on other current x86 cores for choosing a path. The winograd path spreads its
# matrices over the 64 sets of a 32 KiB, 8-way L1 (see winograd_span).
L2_SETS, L2_WAYS, LINE_BYTES = 2048, 8, 64
L1_SETS = 64
PAGE_BYTES = 4096
TLB_REACH_BYTES = 3072 * PAGE_BYTES


def blocked_far_lines(n_out: int) -> int:
    """How many of a vector's lines of filters L2 holds: they lie a row of the bank apart
    (``n_out`` floats), and lines a power of two apart share a fraction of its sets."""
    stride = max(1, n_out * 4 // LINE_BYTES)
    return L2_WAYS * L2_SETS // min(L2_SETS, stride & -stride)


def blocked_block(b: int, blocks: int, out_w: int) -> tuple[int, int]:
    """The first output column and the pixels (4 to ``_jit.BLOCK_PIXELS``) of the blocked
    kernel's block ``b`` of the ``blocks = ceil(out_w / BLOCK_PIXELS)`` of a row of ``out_w`` (at
    least 4) outputs: blocks as even as can be (28 outputs in blocks of at most 6 are
    6+6+6+5+5), or, where that would leave fewer than 4 to a block (5-7 outputs in blocks of at
    most 6), blocks of 4, the last one overlapping the one before (fewer sums would not hide the
    latency of a fused multiply-add)."""
    base = out_w // blocks
    if base < 4:
        return min(b * 4, out_w - 4), 4
    extra = out_w - base * blocks
    return b * base + min(b, extra), base + (1 if b < extra else 0)


def blocked_blocks(out_w: int) -> tuple[int, int]:
    """The pixels that the blocked kernel's blocks compute on a row of ``out_w`` outputs (the
    overlaps counted twice), and the blocks of the row: the rule of :func:`blocked_block`."""
    from ._jit import BLOCK_PIXELS

    blocks = -(-out_w // BLOCK_PIXELS)
    return (out_w if out_w >= 4 * blocks else 4 * blocks), blocks


def blocked_group(out_w: int) -> int:
    """Output rows of ``out_w`` pixels whose sums the blocked kernel makes together: as many as
    :data:`BLOCKED_SUM_FLOATS` hold (each block's sums take BLOCK_PIXELS * LANES floats per
    vector of its task's unit, see ``_jit.BLOCKED_WIDE``)."""
    from . import _jit

    return max(1, BLOCKED_SUM_FLOATS // (blocked_blocks(out_w)[1] * _jit.BLOCK_PIXELS * _jit.LANES * _jit.BLOCKED_WIDE))


def blocked_units(n_out: int) -> int:
    """The blocked kernel's units of ``_jit.BLOCKED_WIDE`` vectors of LANES filters for ``n_out``
    filters (the last one partly filled): a task is a unit and an output row."""
    from . import _jit

    return -(-n_out // (_jit.LANES * _jit.BLOCKED_WIDE))


# The blocked kernel takes its tasks row after row (all the units of a row, see
# ``_jit.correlate_blocked``) for a bank of at most BLOCKED_ROWS_FIRST_BANK bytes, which stays
# in L2 while the rows go by, on an image of more than BLOCKED_ROWS_FIRST_IMAGE bytes, which does
# not: vector after vector, each vector read the whole image again from beyond L2. One thread,
# the kernel alone, vector after vector against row after row: 224x224x64 * 5x5x64x64 with
# stride 2 32.5-32.8 -> 26.5-26.7 ms, 224x224x64 * 3x3x64x64 with stride 2 13.9-14.3 -> 10.3,
# 112x112x256 * 3x3x256x64 with stride 2 13.2-15.6 -> 9.4-10.5, 56x56x128 * 3x3x128x128 with
# stride 2 level (2.1-2.2); but a bank beyond L2 read again for every row, 28x28x256 *
# 5x5x256x256 (6.5 MB), 22.5-22.8 -> 30.2-33.0. Whole calls on two threads were level either
# way (224x224x64 * 5x5x64x64 with stride 2 14.3-15.6 against 14.1-14.5 ms): the gain is for
# single-threaded calls (a batch's workers), 224x224x64 * 3x3x64x64 with stride 2 14.5-18.1 ->
# 10.9-11.4 ms.
BLOCKED_ROWS_FIRST_BANK = 1 << 19
BLOCKED_ROWS_FIRST_IMAGE = 2 << 20


def blocked_rows_first(x_shape, w_shape) -> bool:
    """Whether the blocked kernel takes its tasks row after row (see above)."""
    return (math.prod(w_shape) * 4 <= BLOCKED_ROWS_FIRST_BANK
            and math.prod(x_shape) * 4 > BLOCKED_ROWS_FIRST_IMAGE)


def blocked_tail(w: np.ndarray) -> np.ndarray:
    """The filters of the blocked kernel's last vector when F is not a multiple of ``_jit.LANES``:
    its (fh*fw*C, LANES) matrix, filled up with zero filters; flat. Empty otherwise (the kernel
    reads every vector from the bank itself)."""
    from . import _jit

    fh, fw, n_in, n_out = w.shape
    lanes, f0 = _jit.LANES, n_out - n_out % _jit.LANES
    if f0 == n_out:
        return NO_TAIL
    out = np.zeros((fh * fw * n_in, lanes), np.float32)
    out[:, : n_out - f0] = w.reshape(-1, n_out)[:, f0:]
    return out.reshape(-1)


# ... shared by the calls that have none (writable, as a tail is: one compiled signature; it has
# no cell to write)
NO_TAIL = np.zeros(0, np.float32)


@functools.lru_cache(maxsize=256)
def blocked_layout(out_w: int, width: int, sw: int, fw: int, left: int, channels: int):
    """``(table, zone_a, zone_b, edge_width)``: where the blocked kernel's blocks of a row of
    ``out_w`` outputs read (windows ``fw`` wide, ``sw`` apart, over ``width`` columns of
    ``channels`` after ``left`` columns of zero padding; blocks by the rule of
    :func:`blocked_block`). A block reaching before column 0 or beyond the last reads its window
    rows from the edge copy (see :func:`blocked_edges`): the blocks reaching before column 0
    read its columns ``-left .. zone_a``, the others its columns from ``zone_b`` on (the edge
    copy's rows are ``edge_width`` columns). ``table`` (read only) has a row per block: its first
    output column, its pixels, 1 if it reads the edge copy, the float where its windows start in
    a row of its source and that row's floats."""
    blocks = blocked_blocks(out_w)[1]
    starts = [blocked_block(b, blocks, out_w) for b in range(blocks)]
    spans = [(j0 * sw - left, (j0 + pixels - 1) * sw - left + fw) for j0, pixels in starts]  # columns read
    zone_a = max((hi for lo, hi in spans if lo < 0), default=-left)
    right = [(lo, hi) for lo, hi in spans if hi > width and hi > zone_a]
    zone_b = min((lo for lo, _ in right), default=zone_a)
    zone_c = max((hi for _, hi in right), default=zone_a)
    edge_width = zone_a + left + zone_c - zone_b
    table = np.empty((blocks, 5), np.int64)
    for b, ((j0, pixels), (lo, hi)) in enumerate(zip(starts, spans)):
        if lo >= 0 and hi <= width:
            table[b] = j0, pixels, 0, lo * channels, width * channels
        else:
            column = lo + left if hi <= zone_a else zone_a + left + lo - zone_b
            table[b] = j0, pixels, 1, column * channels, edge_width * channels
    table.flags.writeable = False
    return table, zone_a, zone_b, edge_width


NO_EDGE = np.zeros((1, 1, 0, 1), np.float32)
NO_EDGE.flags.writeable = False


def blocked_edges(x, gw: AxisGeometry, out_w: int):
    """``(edge, table)`` for the blocked kernel reading ``x`` in place (see
    ``_jit.correlate_blocked``): the blocks at the ends of a row whose windows reach into the
    columns of zero padding read their window rows from ``edge``, for every row of ``x`` the
    columns ``-pad_left .. zone_a`` of the padded row followed by as many of its columns from
    ``zone_b`` on as the blocks read (see :func:`blocked_layout`, which gives ``table``; the two
    parts may share columns on a narrow image). Read only; nothing (:data:`NO_EDGE`) when no
    column is padded."""
    n_img, height, width, channels = x.shape
    left = gw.pad_before
    table, zone_a, zone_b, edge_width = blocked_layout(out_w, width, gw.stride, gw.window, left, channels)
    if not (gw.pad_before or gw.pad_after):
        return NO_EDGE, table
    first = zone_a + left  # the columns of the first part
    edge = np.zeros((n_img, height, edge_width, channels), np.float32)
    for column, lo, hi in ((0, -left, zone_a), (first, zone_b, zone_b + edge_width - first)):
        inside_lo, inside_hi = max(lo, 0), min(hi, width)
        if inside_lo < inside_hi:
            edge[:, :, column + inside_lo - lo : column + inside_hi - lo] = x[:, :, inside_lo:inside_hi]
    return read_only(edge), table


def correlate_blocked(x, w, strides, dilations, gh: AxisGeometry, gw: AxisGeometry, bias, activation, out,
                      border: str = "CONSTANT") -> None:
    """The blocked path (see :func:`convfilter._jit.correlate_blocked`): in bands of (unit of
    vectors of filters, output row) tasks on the padded copy of the image (the image itself when
    nothing is padded), or, for a zero-padded image that is large or whose blocks at a row's ends
    read few of its columns (see :func:`blocked_piece_rows`), in bands of output rows, each a
    piece of rows at a time over all the units, on the image read in place: its zero padding is
    never copied (the blocks at the ends of a row read theirs from :func:`blocked_edges`)."""
    relu = activation == "relu"
    plan = _blocked_plan(x.shape, w.shape, tuple(strides), tuple(dilations), gh, gw, out.shape, border)
    kernel, shape_args, units, work, min_rows, piece_rows, rows, table = plan
    matrix = np.ascontiguousarray(w, np.float32).reshape(-1)  # in place: the bank is read as it is
    args = (matrix, blocked_tail(w), *shape_args[:5], *finish_of(bias, w.shape[3], relu), *shape_args[5:])
    if piece_rows is None:
        # a padded copy (the image itself when nothing is padded), whose rows of zero padding
        # need no products; other borders' padding is image cells; tasks are (unit of vectors
        # of filters, output row) pairs, unit after unit or row after row (see the kernel,
        # blocked_units and blocked_rows_first)
        source = read_only(np.ascontiguousarray(padded_copy(x, gh, gw, border)))
        run_bands(kernel, (source, 0, *rows, NO_EDGE, table, *args, out), units * out.shape[0] * out.shape[1], work,
                  min_rows=min_rows)
    else:
        # the image read in place (its zero padding never copied)
        edge, table = blocked_edges(x, gw, out.shape[2])
        run_bands(_blocked_pieces_of_band, (read_only(x), gh.pad_before, edge, table, piece_rows, strides[0], kernel,
                                            args, units, out),
                  out.shape[1], work, min_rows=min_rows)
    if not relu:
        apply_in_place(out, activation)


@functools.lru_cache(maxsize=256)
def _blocked_plan(x_shape, w_shape, strides, dilations, gh: AxisGeometry, gw: AxisGeometry, out_shape, border: str):
    """What :func:`correlate_blocked` takes from the shapes alone, worked out once per shape (a
    7x7 map's call costs about 100 us, a fifth of it spent on these): ``(kernel, shape_args,
    units, work, min_rows, piece_rows, rows, table)``, with ``shape_args`` the kernel's
    arguments ``fh, fw, sh, sw, dh`` and, after the bias's, ``group, rows_first, wide``;
    ``piece_rows`` None for a padded copy, whose rows of the image are ``rows`` and whose
    blocks read by ``table``."""
    from . import _jit

    fh, fw, n_in, n_out = w_shape
    n_img, height, width, _ = x_shape
    shape_args = (fh, fw, *strides, dilations[0], blocked_group(out_shape[2]), blocked_rows_first(x_shape, w_shape),
                  _jit.BLOCKED_WIDE)
    work = math.prod(out_shape) * fh * fw * n_in
    padded_h, padded_w = gh.pad_before + height + gh.pad_after, gw.pad_before + width + gw.pad_after
    min_rows = rows_holding(BLOCKED_BAND_PIXELS, out_shape[2])
    piece_rows = rows = table = None
    if border == "CONSTANT" and (padded_h, padded_w) != (height, width):
        piece_rows = blocked_piece_rows(x_shape, w_shape, strides, dilations, padded_h, padded_w, out_shape[1:3],
                                        gw.window, gw.pad_before)
    if piece_rows is None:
        rows = (gh.pad_before, gh.pad_before + height) if border == "CONSTANT" else (0, padded_h)
        table = blocked_layout(out_shape[2], padded_w, gw.stride, gw.window, 0, n_in)[0]
    else:
        piece_rows = min(piece_rows, _band_piece_rows(out_shape[1], work, min_rows))
    return (_backend.compiled(BLOCKED_KERNEL), shape_args, blocked_units(n_out), work, min_rows, piece_rows, rows,
            table)


def blocked_piece_rows(x_shape, w_shape, strides, dilations, padded_h: int, padded_w: int, out_hw, window: int,
                       left: int) -> int | None:
    """Output rows per piece when the blocked kernel reads a zero-padded image in place (see
    :func:`correlate_blocked`; a piece of at least the band's rows is one piece a band), or None
    when it reads a padded copy: in place when the image is large (:func:`_piece_rows`), or
    when the edge copy, of the columns that the blocks at a row's ends read (``window`` columns
    wide, ``left`` of them zero padding), is at most BLOCKED_IN_PLACE_EDGE of the image's and
    the bank at most BLOCKED_IN_PLACE_BANK bytes."""
    n_in, width = x_shape[3], x_shape[2]
    rows = _piece_rows(n_in, padded_h, padded_w, out_hw[0], strides[0], w_shape[0], dilations[0])
    if (rows is None and math.prod(w_shape) * 4 <= BLOCKED_IN_PLACE_BANK
            and blocked_layout(out_hw[1], width, strides[1], window, left, n_in)[3] <= BLOCKED_IN_PLACE_EDGE * width):
        rows = out_hw[0]
    return rows


def forget_plans() -> None:
    """Forget what was worked out once per shape from this module's thresholds (the blocked
    path's plans and layouts): for tests that change a threshold."""
    _blocked_plan.cache_clear()
    blocked_layout.cache_clear()


def _blocked_pieces_of_band(source, pad_top, edge, table, piece_rows: int, sh: int, kernel, args, units: int, out,
                            start, stop) -> None:
    """Output rows ``start .. stop`` of every image, a piece of ``piece_rows`` rows at a time, all
    ``units`` of vectors of filters of a piece together: they read its rows of the image while
    they are in cache (the same bits as one call over the whole image)."""
    for n in range(out.shape[0]):
        for lo in range(start, stop, piece_rows):
            hi = min(lo + piece_rows, stop)
            kernel(source[n : n + 1], pad_top - lo * sh, 0, source.shape[1], edge[n : n + 1], table, *args,
                   out[n : n + 1, lo:hi], 0, units * (hi - lo))
