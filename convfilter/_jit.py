"""Private Numba kernels.

They assume valid, C-contiguous float32 arrays and preallocated outputs:
``convfilter.ops`` checks and converts everything before calling them. They
never validate, print or allocate anything the caller did not ask for
(beyond one scratch row).

The compute kernels work on a band of output rows ``[row_start, row_stop)``
and release the GIL, so ``ops`` can run bands on several threads without
Numba's parallel backend (which costs seconds to compile and would
oversubscribe inside worker processes).

Loop orders: every innermost loop runs along a contiguous axis (an image
row, or the channels of one pixel) so that it vectorises, and accumulates
into a row that stays in L1 cache. Zero taps are skipped (line kernels are
mostly zeros), which is exact. Two inner loops keep their sums in vector
registers instead, which Numba's loops cannot express: the direct loops'
blocks of a vector of outputs and the blocked path's outer products, both
written as LLVM vectors through Numba intrinsics.

Arithmetic is strict IEEE float32 (no ``fastmath``: no fused multiply-add, no
reassociation), so the results are the same bits on every CPU, and the numpy
twins in :mod:`convfilter._numpy_kernels` (same signatures, same operations in
the same order) give them too. The one exception is ``correlate_blocked``, which
sums with fused multiply-adds (see its section) and has no twin. A change to the order of
operations here must be made there as well; the tests compare the two exactly.
"""

from __future__ import annotations

from ._numba_cache import configure_cache

# False only when no folder at all can hold the cache: compile in every process instead
CACHE = configure_cache() is not False

import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

# The public kernels, for ``ops.warm_up`` (helpers inlined into them are not listed).
KERNELS = ("pad_planar", "pad_planar_phases", "pad_planar_channel_sum", "pad_planar_channel_sum_scaled",
           "scale_channel", "correlate_planar", "correlate_separable", "correlate_depthwise", "max_pool", "avg_pool",
           "winograd_input", "winograd_output", "winograd_filters",
           "winograd5_input", "winograd5_output", "winograd5_filters", "correlate_blocked", "finish_rows")


@njit(cache=CACHE, nogil=True, inline="always")
def _zero_border(plane, pad_top, pad_left, height, width):
    """Zero the cells of a padded 2-D plane outside ``[pad_top, +height) x [pad_left, +width)``."""
    plane[:pad_top] = 0.0
    plane[pad_top + height :] = 0.0
    for r in range(pad_top, pad_top + height):
        plane[r, :pad_left] = 0.0
        plane[r, pad_left + width :] = 0.0


@njit(cache=CACHE, nogil=True)
def pad_planar(x, pad_top, pad_left, out):
    """Copy NHWC ``x`` into the planar (N, C, Hp, Wp) ``out`` at an offset; the border is zeroed."""
    n_img, height, width, channels = x.shape
    for n in range(n_img):
        for c in range(channels):
            _zero_border(out[n, c], pad_top, pad_left, height, width)
        for r in range(height):
            pixels = x[n, r].reshape(width * channels)
            if channels == 1:  # a plain row copy, which vectorises
                out[n, 0, pad_top + r, pad_left : pad_left + width] = pixels
                continue
            for c in range(channels):
                dst = out[n, c, pad_top + r, pad_left : pad_left + width]
                for q in range(width):
                    dst[q] = pixels[q * channels + c]


@njit(cache=CACHE, nogil=True, inline="always")
def _phase_columns(p, stride, pad_left, width):
    """The image columns ``k0, k0 + stride, ...`` (``count`` of them) that land in phase ``p`` of
    a padded row dealt into ``stride`` phases, and the phase column ``first`` of ``k0``."""
    k0 = (p - pad_left) % stride
    count = (width - k0 + stride - 1) // stride if k0 < width else 0
    return k0, count, (k0 + pad_left) // stride


@njit(cache=CACHE, nogil=True)
def pad_planar_phases(x, stride, pad_top, pad_left, out):
    """:func:`pad_planar` with the columns of each padded row dealt into ``stride`` phases: padded
    column ``q`` of channel ``c`` goes to plane ``c*stride + q % stride``, column ``q // stride``
    of the (N, C*stride, Hp, Wq) ``out``, so that a kernel with that column stride reads
    consecutive cells; every other cell is zeroed."""
    n_img, height, width, channels = x.shape
    for n in range(n_img):
        for c in range(channels):
            for p in range(stride):
                k0, count, first = _phase_columns(p, stride, pad_left, width)
                _zero_border(out[n, c * stride + p], pad_top, first, height, count)
        for r in range(height):
            pixels = x[n, r].reshape(width * channels)
            for c in range(channels):
                for p in range(stride):
                    k0, count, first = _phase_columns(p, stride, pad_left, width)
                    dst = out[n, c * stride + p, pad_top + r, first : first + count]
                    for q in range(count):
                        dst[q] = pixels[(k0 + q * stride) * channels + c]


@njit(cache=CACHE, nogil=True)
def pad_planar_channel_sum(x, pad_top, pad_left, out):
    """Like :func:`pad_planar` into (N, 1, Hp, Wp), summing the channels of each pixel."""
    n_img, height, width, channels = x.shape
    for n in range(n_img):
        _zero_border(out[n, 0], pad_top, pad_left, height, width)
        for r in range(height):
            pixels = x[n, r].reshape(width * channels)
            dst = out[n, 0, pad_top + r, pad_left : pad_left + width]
            if channels == 3:  # RGB, the common case, unrolled so that it vectorises
                for q in range(width):
                    dst[q] = pixels[3 * q] + pixels[3 * q + 1] + pixels[3 * q + 2]
            else:
                for q in range(width):
                    total = pixels[q * channels]
                    for c in range(1, channels):
                        total += pixels[q * channels + c]
                    dst[q] = total


@njit(cache=CACHE, nogil=True)
def pad_planar_channel_sum_scaled(x, values, pad_top, pad_left, out):
    """:func:`pad_planar_channel_sum` of ``values[x]`` for 8-bit samples ``x``, where ``values``
    holds the float32 value of each of the 256 samples (``arange(256) / 255`` for an image): each
    sample becomes exactly what a float32 image would hold as it is read, so no float copy of the
    image is made (a 24-megapixel RGB photo's would take 288 MB), and no division is done."""
    n_img, height, width, channels = x.shape
    for n in range(n_img):
        _zero_border(out[n, 0], pad_top, pad_left, height, width)
        for r in range(height):
            pixels = x[n, r].reshape(width * channels)
            dst = out[n, 0, pad_top + r, pad_left : pad_left + width]
            if channels == 3:  # RGB, the common case, unrolled
                for q in range(width):
                    dst[q] = values[pixels[3 * q]] + values[pixels[3 * q + 1]] + values[pixels[3 * q + 2]]
            else:
                for q in range(width):
                    total = values[pixels[q * channels]]
                    for c in range(1, channels):
                        total += values[pixels[q * channels + c]]
                    dst[q] = total


@njit(cache=CACHE, nogil=True, inline="always")
def _four_taps(a0, a1, paired, fresh, s0, s1, s2, s3, k0, k1, t, count):
    """``a0[j] += sum_e k0[t + e] * s_e[j]`` for the four rows ``s_e`` and ``j < count``; with
    ``paired``, ``a1`` gets the same with weights ``k1``. With ``fresh`` the accumulators are
    taken as zeros instead of read (``0 + sum``, bit for bit what zeroing them first gives),
    which spares a pass that zeroes them.

    Four taps per pass over an accumulator row, and for two filters the same
    four source values feed both: loads and stores, not arithmetic, limit
    these loops. Every row is a contiguous 1-D array (or a strided slice for
    strides above 1), so the loop vectorises.
    """
    w00, w01, w02, w03 = k0[t], k0[t + 1], k0[t + 2], k0[t + 3]
    zero = np.float32(0.0)
    if not paired:
        for j in range(count):
            a0[j] = (zero if fresh else a0[j]) + (w00 * s0[j] + w01 * s1[j] + w02 * s2[j] + w03 * s3[j])
    else:
        w10, w11, w12, w13 = k1[t], k1[t + 1], k1[t + 2], k1[t + 3]
        for j in range(count):
            x0, x1, x2, x3 = s0[j], s1[j], s2[j], s3[j]
            a0[j] = (zero if fresh else a0[j]) + (w00 * x0 + w01 * x1 + w02 * x2 + w03 * x3)
            a1[j] = (zero if fresh else a1[j]) + (w10 * x0 + w11 * x1 + w12 * x2 + w13 * x3)


@njit(cache=CACHE, nogil=True, inline="always")
def _four_taps_four_filters(acc, f, fresh, s0, s1, s2, s3, weights, t, count):
    """``acc[f + g, j] += sum_e weights[f + g, t + e] * s_e[j]`` for ``g < 4``, ``j < count``
    (``fresh``: as in :func:`_four_taps`).

    Four filters per pass over the rows: each source value loaded feeds four
    accumulators, half the loads per multiply-add of the paired loop.
    """
    a0, a1, a2, a3 = acc[f], acc[f + 1], acc[f + 2], acc[f + 3]
    k0, k1, k2, k3 = weights[f], weights[f + 1], weights[f + 2], weights[f + 3]
    w00, w01, w02, w03 = k0[t], k0[t + 1], k0[t + 2], k0[t + 3]
    w10, w11, w12, w13 = k1[t], k1[t + 1], k1[t + 2], k1[t + 3]
    w20, w21, w22, w23 = k2[t], k2[t + 1], k2[t + 2], k2[t + 3]
    w30, w31, w32, w33 = k3[t], k3[t + 1], k3[t + 2], k3[t + 3]
    zero = np.float32(0.0)
    for j in range(count):
        x0, x1, x2, x3 = s0[j], s1[j], s2[j], s3[j]
        a0[j] = (zero if fresh else a0[j]) + (w00 * x0 + w01 * x1 + w02 * x2 + w03 * x3)
        a1[j] = (zero if fresh else a1[j]) + (w10 * x0 + w11 * x1 + w12 * x2 + w13 * x3)
        a2[j] = (zero if fresh else a2[j]) + (w20 * x0 + w21 * x1 + w22 * x2 + w23 * x3)
        a3[j] = (zero if fresh else a3[j]) + (w30 * x0 + w31 * x1 + w32 * x2 + w33 * x3)


@njit(cache=CACHE, nogil=True, inline="always")
def _row_taps_four_filters(acc, f, fresh, rows, taps, weights, row_shift, col_shift, step, count):
    """Like :func:`_row_taps` for the four filters ``f .. f+3`` at once (rows ``acc[f + g]``)."""
    span = (count - 1) * step + 1
    for t in range(0, taps.shape[0], 4):
        r0, r1 = taps[t, 0] + row_shift, taps[t + 1, 0] + row_shift
        r2, r3 = taps[t + 2, 0] + row_shift, taps[t + 3, 0] + row_shift
        q0, q1 = taps[t, 1] + col_shift, taps[t + 1, 1] + col_shift
        q2, q3 = taps[t + 2, 1] + col_shift, taps[t + 3, 1] + col_shift
        if step == 1:  # contiguous slices: plain vector loads
            _four_taps_four_filters(acc, f, fresh and t == 0, rows[r0, q0 : q0 + count], rows[r1, q1 : q1 + count],
                                    rows[r2, q2 : q2 + count], rows[r3, q3 : q3 + count], weights, t, count)
        else:
            _four_taps_four_filters(acc, f, fresh and t == 0, rows[r0, q0 : q0 + span : step],
                                    rows[r1, q1 : q1 + span : step], rows[r2, q2 : q2 + span : step],
                                    rows[r3, q3 : q3 + span : step], weights, t, count)


@njit(cache=CACHE, nogil=True, inline="always")
def _tap_run(rows, taps, t, count):
    """The ``count`` floats of ``rows`` that tap ``t`` reads (stride 1): from its row and column."""
    col = taps[t, 1]
    return rows[taps[t, 0], col : col + count]


@njit(cache=CACHE, nogil=True, inline="always")
def _eight_taps(a0, fresh, rows, taps, k0, t, count):
    """Two passes of :func:`_four_taps` (one filter, taps ``t .. t+7``, stride 1) in one: the
    same sums in the same order, one load and store of the accumulator row instead of two."""
    s0, s1, s2, s3 = (_tap_run(rows, taps, t, count), _tap_run(rows, taps, t + 1, count),
                      _tap_run(rows, taps, t + 2, count), _tap_run(rows, taps, t + 3, count))
    s4, s5, s6, s7 = (_tap_run(rows, taps, t + 4, count), _tap_run(rows, taps, t + 5, count),
                      _tap_run(rows, taps, t + 6, count), _tap_run(rows, taps, t + 7, count))
    w0, w1, w2, w3 = k0[t], k0[t + 1], k0[t + 2], k0[t + 3]
    w4, w5, w6, w7 = k0[t + 4], k0[t + 5], k0[t + 6], k0[t + 7]
    zero = np.float32(0.0)
    for j in range(count):
        first = (zero if fresh else a0[j]) + (w0 * s0[j] + w1 * s1[j] + w2 * s2[j] + w3 * s3[j])
        a0[j] = first + (w4 * s4[j] + w5 * s5[j] + w6 * s6[j] + w7 * s7[j])


@njit(cache=CACHE, nogil=True, inline="always")
def _row_taps(a0, a1, paired, fresh, rows, taps, k0, k1, row_shift, col_shift, step, count):
    """``a0[j] += sum_t k0[t] * rows[taps[t, 0] + row_shift, taps[t, 1] + j*step]`` (and ``a1``
    with ``k1`` when ``paired``: two filters sharing the taps). With ``fresh`` the
    accumulators start from zero instead (they need not be zeroed first).

    ``rows`` is a 2-D (row, column) array; ``len(taps)`` is a multiple of four
    (padded with zero weights).
    """
    if step == 1:  # contiguous slices: plain vector loads
        for t in range(0, taps.shape[0], 4):
            r0, r1 = taps[t, 0] + row_shift, taps[t + 1, 0] + row_shift
            r2, r3 = taps[t + 2, 0] + row_shift, taps[t + 3, 0] + row_shift
            q0, q1 = taps[t, 1] + col_shift, taps[t + 1, 1] + col_shift
            q2, q3 = taps[t + 2, 1] + col_shift, taps[t + 3, 1] + col_shift
            _four_taps(a0, a1, paired, fresh and t == 0, rows[r0, q0 : q0 + count], rows[r1, q1 : q1 + count],
                       rows[r2, q2 : q2 + count], rows[r3, q3 : q3 + count], k0, k1, t, count)
    else:
        span = (count - 1) * step + 1
        for t in range(0, taps.shape[0], 4):
            r0, r1 = taps[t, 0] + row_shift, taps[t + 1, 0] + row_shift
            r2, r3 = taps[t + 2, 0] + row_shift, taps[t + 3, 0] + row_shift
            q0, q1 = taps[t, 1] + col_shift, taps[t + 1, 1] + col_shift
            q2, q3 = taps[t + 2, 1] + col_shift, taps[t + 3, 1] + col_shift
            _four_taps(a0, a1, paired, fresh and t == 0, rows[r0, q0 : q0 + span : step],
                       rows[r1, q1 : q1 + span : step], rows[r2, q2 : q2 + span : step],
                       rows[r3, q3 : q3 + span : step], k0, k1, t, count)


@njit(cache=CACHE, nogil=True, inline="always")
def _row_taps_by_eight(acc, fresh, rows, taps, weights, count):
    """:func:`_row_taps` for one filter, stride 1 and no shift, eight taps per pass over ``acc``
    where there are eight (the same sums in the same order): the separable path's row pass,
    whose long kernels (a 31-tap Gaussian: 32 taps) then load and store ``acc`` half as often."""
    start = taps.shape[0] % 8  # 0 or 4: a first pass of four taps
    if start:
        _row_taps(acc, acc, False, fresh, rows, taps[:4], weights, weights, 0, 0, 1, count)
    for t in range(start, taps.shape[0], 8):
        _eight_taps(acc, fresh and t == 0, rows, taps, weights, t, count)


@njit(cache=CACHE, nogil=True, inline="always")
def _finished(value, bias, add_bias, relu):
    """``value + bias`` (when ``add_bias``), then ``max(., 0)`` (when ``relu``): the same float32
    operations as ``np.maximum(z + b, 0)`` after the kernel, so the fused result is identical
    (NaN and -0.0 pass the ReLU as they pass ``np.maximum``)."""
    if add_bias:
        value += bias
    if relu and value < 0:
        value = np.float32(0.0)
    return value


@njit(cache=CACHE, nogil=True, inline="always")
def _store_transposed(rows, dst, bias, add_bias, relu):
    """``dst[j, f] = finished(rows[f, j])``: one output row of every filter into an NHWC row, with
    the bias ``bias[f]`` and the ReLU applied on the way (see :func:`_finished`)."""
    n_out, width = rows.shape
    if n_out == 1:  # NHWC with one filter is a plain row
        flat, src, b = dst.reshape(width), rows[0], bias[0]
        for j in range(width):
            flat[j] = _finished(src[j], b, add_bias, relu)
    elif n_out <= 4:  # few filters: a strided write per filter row (measured 4x faster for 2)
        for f in range(n_out):
            src, b = rows[f], bias[f]
            for j in range(width):
                dst[j, f] = _finished(src[j], b, add_bias, relu)
    else:  # many: contiguous writes of each pixel's filters (5x faster than the above for 32)
        for j in range(width):
            for f in range(n_out):
                dst[j, f] = _finished(rows[f, j], bias[f], add_bias, relu)


@njit(cache=CACHE, nogil=True)
def finish_rows(target, bias, add_bias, relu):
    """``target[p, f] = max(target[p, f] + bias[f], 0)`` in place on the (pixels, F) rows of a
    matrix-product path's tile: the bias (when ``add_bias``) and the ReLU (when ``relu``) in one
    pass while the tile is in cache, where numpy makes two (its ``np.maximum`` runs at a third of
    the speed of an addition). The same float32 operations as ``target += bias`` and then
    ``np.maximum(target, 0)``: NaN stays NaN, every other value not above 0 becomes +0.0."""
    pixels, n_out = target.shape
    zero = np.float32(0.0)
    for p in range(pixels):
        row = target[p]
        if add_bias and relu:
            for f in range(n_out):
                value = row[f] + bias[f]
                row[f] = value if value > zero or value != value else zero
        elif add_bias:
            for f in range(n_out):
                row[f] += bias[f]
        elif relu:
            for f in range(n_out):
                value = row[f] + zero  # exact (only -0.0 turns +0.0, as the ReLU turns it): a store the
                row[f] = value if value > zero or value != value else zero  # compiler vectorises


@njit(cache=CACHE, nogil=True)
def scale_channel(x, w, sh, sw, bias, add_bias, relu, out, row_start, row_stop):
    """A 1x1 kernel on one input channel is a scaling: ``out[n, i, j, f] = 0 + x[n, i*sh, j*sw, 0]
    * w[f]`` (then the bias and the ReLU, see :func:`_finished`) for output rows ``row_start ..
    row_stop`` of every image, written straight into the NHWC rows. ``0 +`` as the direct loops
    start their sums, so the bits are theirs for finite inputs."""
    n_img, out_w, n_out = out.shape[0], out.shape[2], out.shape[3]
    zero = np.float32(0.0)
    for n in range(n_img):
        for i in range(row_start, row_stop):
            src, dst = x[n, i * sh], out[n, i]
            if n_out == 1:  # one plain row: loops the compiler vectorises
                row, w0, b0 = dst.reshape(out_w), w[0], bias[0]
                if sw == 1:  # a contiguous source row
                    cells = src.reshape(-1)
                    for j in range(out_w):
                        row[j] = _finished(zero + cells[j] * w0, b0, add_bias, relu)
                else:
                    for j in range(out_w):
                        row[j] = _finished(zero + src[j * sw, 0] * w0, b0, add_bias, relu)
                continue
            for j in range(out_w):
                value, pixel = src[j * sw, 0], dst[j]
                for f in range(n_out):
                    pixel[f] = _finished(zero + value * w[f], bias[f], add_bias, relu)


# --- the direct loops' vector blocks ---------------------------------------------------------
# A block of VECTOR_PIXELS outputs of a row (one vector register) for each of PLANAR_FILTERS
# filters, summed over every tap with the sums in registers: the same float32 operations per
# output as the loops above (``0 + g_0 + g_1 + ...``, each ``g = w0*x0 + w1*x1 + w2*x2 + w3*x3``
# over a group of four taps, left to right, multiplies and adds rounded one at a time), so the
# same bits, and those of the numpy twin. The loops above load and store each output's sum once
# per group of four taps; this keeps it in a register (Numba does not vectorise a loop over taps
# across pixels, so the block is written as LLVM vectors, as the blocked path's run is). The
# finished sums go straight into the NHWC output row, each pixel's filters of the block as one
# short vector: no scratch row and no transposed copy of it (measured on one thread, the kernel
# alone: 224x224x3 * 3x3x3x16 0.74 -> 0.55 ms, 1024x1024x3 * 3x3x3x16 with stride 2 6.4 -> 4.7).


def _vector_lanes() -> int:
    """Floats per vector register: 16 where Numba compiles for AVX-512, else 8 (the blocked
    path's 8 sums of 16 filters would not fit in AVX2's 16 registers)."""
    from numba.core import config
    import llvmlite.binding as llvm

    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else llvm.get_host_cpu_features().flatten()
    return 16 if "+avx512f" in features.split(",") else 8


LANES = _vector_lanes()
VECTOR_PIXELS = LANES  # outputs per block of the direct loops: one vector register
PLANAR_FILTERS = 4


_I64 = ir.IntType(64)
_FLOATS = ir.FloatType().as_pointer()


def _vector_type(lanes: int):
    """The LLVM type of a vector of ``lanes`` floats, and of a pointer to one."""
    vector = ir.VectorType(ir.FloatType(), lanes)
    return vector, vector.as_pointer()


def _out_of_line(module, name: str, arguments: list):
    """The function ``void name(arguments)`` of ``module``, internal and never inlined, and whether
    it is new there (then it still needs its body)."""
    function = cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), arguments), name)
    if not function.is_declaration:
        return function, False
    function.linkage = "internal"
    function.attributes.add("noinline")
    return function, True


def _spread(builder, value, lanes: int):
    """A vector of ``lanes`` floats, each ``value``."""
    undefined = ir.Constant(ir.VectorType(ir.FloatType(), lanes), ir.Undefined)
    first = builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, undefined, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _finish_vector(builder, value, bias_vector, add_bias, relu):
    """:func:`_finished` on a vector: ``v + b`` where ``add_bias``, then 0 where it is below 0
    where ``relu`` (NaN and -0.0 stay); the flags are LLVM booleans."""
    zero = ir.Constant(value.type, [0.0] * value.type.count)
    value = builder.select(add_bias, builder.fadd(value, bias_vector), value)
    below = builder.fcmp_ordered("<", value, zero)
    return builder.select(relu, builder.select(below, zero, value), value)


def _flag(builder, value):
    """An integer argument as an LLVM boolean (not zero: true)."""
    return builder.icmp_unsigned("!=", value, ir.Constant(value.type, 0))


def _interleaved(builder, vectors):
    """One vector holding ``vectors[r][p]`` at ``p*len(vectors) + r``: the rows of a (filters,
    pixels) block as its pixels' runs of filters, as an NHWC row holds them."""
    lanes, count = vectors[0].type.count, len(vectors)
    joined = list(vectors)
    while len(joined) > 1:  # join pairs (a lone last one with undefined lanes) until one is left
        pairs = []
        for a in range(0, len(joined), 2):
            left = joined[a]
            right = joined[a + 1] if a + 1 < len(joined) else ir.Constant(left.type, ir.Undefined)
            width = left.type.count
            pairs.append(builder.shuffle_vector(left, right, ir.Constant(ir.VectorType(ir.IntType(32), 2 * width),
                                                                         list(range(2 * width)))))
        joined = pairs
    mask = [r * lanes + p for p in range(lanes) for r in range(count)]
    whole = joined[0]
    return builder.shuffle_vector(whole, ir.Constant(whole.type, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), len(mask)), mask))


def _planar_block(filters: int, vectors: int):
    """The intrinsic ``block(plane, base, offsets, n_taps, weights, w_start, w_stride, dst, d_start,
    d_pixel, bias, f0, add_bias, relu)``: for r < ``filters`` and p < ``vectors`` *
    VECTOR_PIXELS, ``dst[d_start + p*d_pixel + r] = finished(0 + sum over groups of four taps t
    of (w[t]*x[t] + w[t+1]*x[t+1] + w[t+2]*x[t+2] + w[t+3]*x[t+3]))`` with the bias ``bias[f0 +
    r]`` (see :func:`_finished`), where ``w[t] = weights[w_start + r*w_stride + t]`` and ``x[t] =
    plane[base + offsets[t] + p]``: each tap's weights and offset loaded once for ``vectors``
    vectors of outputs, and the sums stored straight into an NHWC row (``dst``'s pixels
    ``d_pixel`` floats apart, their filters adjacent). A function of its own, never inlined (see
    :func:`_outer_run`)."""
    name = f"convfilter_planar_block_{filters}x{vectors}x{VECTOR_PIXELS}"

    def define(module):
        vector, pointer = _vector_type(VECTOR_PIXELS)
        i64, floats = _I64, _FLOATS
        function, new = _out_of_line(module, name, [floats, i64, i64.as_pointer(), i64, floats, i64, i64, floats,
                                                    i64, i64, floats, i64, i64, i64])
        if not new:
            return function
        (plane, base, offsets, n_taps, weights, w_start, w_stride, dst, d_start, d_pixel, bias, f0, add_bias,
         relu) = function.args
        builder = ir.IRBuilder(function.append_basic_block("entry"))
        zero = ir.Constant(vector, [0.0] * VECTOR_PIXELS)
        slots = {}
        for r in range(filters):
            for q in range(vectors):
                slots[r, q] = builder.alloca(vector)  # promoted to a register
                builder.store(zero, slots[r, q])
        origin = builder.gep(plane, [base])
        firsts = [builder.gep(weights, [builder.add(w_start, builder.mul(w_stride, ir.Constant(i64, r)))])
                  for r in range(filters)]
        groups = builder.udiv(n_taps, ir.Constant(i64, 4))
        with cgutils.for_range(builder, groups) as loop:
            t = builder.mul(loop.index, ir.Constant(i64, 4))
            taps = [builder.add(t, ir.Constant(i64, e)) for e in range(4)]
            values = {}
            for e, tap in enumerate(taps):
                cell = builder.gep(origin, [builder.load(builder.gep(offsets, [tap]))])
                for q in range(vectors):
                    shifted = builder.gep(cell, [ir.Constant(i64, q * VECTOR_PIXELS)])
                    values[e, q] = builder.load(builder.bitcast(shifted, pointer), align=4)
            for r in range(filters):
                spread = [_spread(builder, builder.load(builder.gep(firsts[r], [tap])), VECTOR_PIXELS) for tap in taps]
                for q in range(vectors):
                    group = builder.fmul(spread[0], values[0, q])
                    for e in range(1, 4):
                        group = builder.fadd(group, builder.fmul(spread[e], values[e, q]))
                    builder.store(builder.fadd(builder.load(slots[r, q]), group), slots[r, q])
        add_bias, relu = _flag(builder, add_bias), _flag(builder, relu)
        biases = [_spread(builder, builder.load(builder.gep(bias, [builder.add(f0, ir.Constant(i64, r))])),
                          VECTOR_PIXELS) for r in range(filters)]
        run_type = ir.VectorType(ir.FloatType(), filters)
        row = builder.gep(dst, [d_start])
        adjacent = builder.icmp_unsigned("==", d_pixel, ir.Constant(i64, filters))  # the block's are all the filters
        for q in range(vectors):
            finished = [_finish_vector(builder, builder.load(slots[r, q]), biases[r], add_bias, relu)
                        for r in range(filters)]
            pixels = _interleaved(builder, finished)  # pixel p's filters at p*filters ..
            first = builder.gep(row, [builder.mul(d_pixel, ir.Constant(i64, q * VECTOR_PIXELS))])
            with builder.if_else(adjacent) as (whole, apart):
                with whole:  # one run of the row
                    builder.store(pixels, builder.bitcast(first, pixels.type.as_pointer()), align=4)
                with apart:  # a run of the block's filters per pixel
                    for p in range(VECTOR_PIXELS):
                        run = builder.shuffle_vector(pixels, ir.Constant(pixels.type, ir.Undefined),
                                                     ir.Constant(ir.VectorType(ir.IntType(32), filters),
                                                                 list(range(p * filters, (p + 1) * filters))))
                        cell = builder.gep(first, [builder.mul(d_pixel, ir.Constant(i64, p))])
                        builder.store(run, builder.bitcast(cell, run_type.as_pointer()), align=4)
        builder.ret_void()
        return function

    @intrinsic
    def block(typingctx, plane, base, offsets, n_taps, weights, w_start, w_stride, dst, d_start, d_pixel, bias, f0,
              add_bias, relu):
        def codegen(context, builder, signature, args):
            data = {i: context.make_array(signature.args[i])(context, builder, args[i]).data for i in (0, 2, 4, 7, 10)}
            flags = [builder.zext(args[i], _I64) if args[i].type.width < 64 else args[i] for i in (12, 13)]
            builder.call(define(builder.module), [data[0], args[1], data[2], args[3], data[4], args[5], args[6],
                                                  data[7], args[8], args[9], data[10], args[11], *flags])
            return context.get_dummy_value()

        return (types.void(plane, base, offsets, n_taps, weights, w_start, w_stride, dst, d_start, d_pixel, bias, f0,
                           add_bias, relu), codegen)

    return block


_planar_block_4 = _planar_block(PLANAR_FILTERS, 1)
# The last one to three filters take blocks of PLANAR_WIDE vectors where the row has them: with
# fewer filters per block, each tap's weights and offset feed more outputs that way (one thread,
# medians of alternating runs: 2x427x640x3 * 7x7x3x2 6.1-6.6 ms in blocks of one vector, 5.7-6.2
# in blocks of four, 5.6-6.5 with the loops over rows before the blocks; 1x427x640x3 * 7x7x3x1
# 2.3-2.7, 1.7-2.3 and 2.3-2.9). Four filters gained nothing from two vectors (112x112x3 *
# 3x3x3x16 0.22 ms in blocks of one, 0.27 in blocks of two).
PLANAR_WIDE = 4
_planar_block_1, _planar_block_1_wide = _planar_block(1, 1), _planar_block(1, PLANAR_WIDE)
_planar_block_2, _planar_block_2_wide = _planar_block(2, 1), _planar_block(2, PLANAR_WIDE)
_planar_block_3, _planar_block_3_wide = _planar_block(3, 1), _planar_block(3, PLANAR_WIDE)


@njit(cache=CACHE, nogil=True, inline="always")
def _planar_rest(rest, wide, plane, base, offsets, n_taps, weights, w_start, w_stride, dst, d_start, d_pixel, bias,
                 f0, add_bias, relu):
    """The block of the last ``rest`` (1-3) filters, of PLANAR_WIDE vectors of outputs when
    ``wide``, else of one."""
    args = (plane, base, offsets, n_taps, weights, w_start, w_stride, dst, d_start, d_pixel, bias, f0, add_bias, relu)
    if rest == 1:
        if wide:
            _planar_block_1_wide(*args)
        else:
            _planar_block_1(*args)
    elif rest == 2:
        if wide:
            _planar_block_2_wide(*args)
        else:
            _planar_block_2(*args)
    elif wide:
        _planar_block_3_wide(*args)
    else:
        _planar_block_3(*args)


@njit(cache=CACHE, nogil=True)
def correlate_planar(xp, taps, weights, sh, sw, bias, add_bias, relu, out, row_start, row_stop):
    """Direct cross-correlation of a padded planar input, one output row at a time.

    ``xp`` is (N, C, Hp, Wp) viewed as (N, C*Hp, Wp); the taps
    ``taps[t] = (c*Hp + u*dh, v*dw)`` are the positions where any filter has
    a nonzero weight, and ``weights[f, t]`` each filter's weight there, so that

    ``out[n, i, j, f] = sum_t weights[f, t] * xp[n, taps[t, 0] + i*sh, taps[t, 1] + j*sw]``

    for ``row_start <= i < row_stop``, plus ``bias[f]`` when ``add_bias`` and then a ReLU when
    ``relu``, applied as each row is stored. Rows at least a vector wide (with a column stride
    of 1) are summed in the vector blocks above, stored straight into the NHWC row. Other rows go
    through the loops over rows: filters four at a time through the taps (then two, then one),
    each row summed in a scratch block that stays in L1 cache, then written into the NHWC output.
    """
    n_img, out_w, n_out = out.shape[0], out.shape[2], out.shape[3]
    # blocks of VECTOR_PIXELS outputs (the last overlapping the one before), stored straight into
    # the NHWC rows; the loops over rows sum a row (or a tile of it) in a scratch block
    vectors = sw == 1 and out_w >= VECTOR_PIXELS
    tile = planar_tile(n_out, out_w)
    scratch = np.empty(0 if vectors else n_out * tile, np.float32)
    width, n_taps = xp.shape[2], taps.shape[0]
    offsets = np.empty(n_taps, np.int64)  # each tap's cell from a window's first, in the flat plane
    for t in range(n_taps):
        offsets[t] = taps[t, 0] * width + taps[t, 1]
    flat_weights = weights.reshape(-1)
    rest = n_out % PLANAR_FILTERS
    wide = out_w >= PLANAR_WIDE * VECTOR_PIXELS
    span = VECTOR_PIXELS * (PLANAR_WIDE if wide else 1)
    for n in range(n_img):
        plane = xp[n].reshape(-1)
        for i in range(row_start, row_stop):
            if vectors:
                # a vector of outputs for four filters at a time, then the last one to three
                # together (a span of PLANAR_WIDE vectors on rows that have them)
                first, dst = i * sh * width, out[n, i]
                for p in range(0, out_w, VECTOR_PIXELS):
                    p = min(p, out_w - VECTOR_PIXELS)
                    for f in range(0, n_out - PLANAR_FILTERS + 1, PLANAR_FILTERS):
                        _planar_block_4(plane, first + p, offsets, n_taps, flat_weights, f * n_taps, n_taps, dst,
                                        p * n_out + f, n_out, bias, f, add_bias, relu)
                f = n_out - rest
                for p in range(0, out_w if rest else 0, span):
                    p = min(p, out_w - span)
                    _planar_rest(rest, wide, plane, first + p, offsets, n_taps, flat_weights, f * n_taps, n_taps, dst,
                                 p * n_out + f, n_out, bias, f, add_bias, relu)
                continue
            for j in range(0, out_w, tile):
                count = min(tile, out_w - j)
                rows = scratch[: n_out * count].reshape(n_out, count)
                col = j * sw
                # four filters per pass while at least four are left, then two, then one; each
                # starts its rows from zero (``fresh``)
                for f in range(0, n_out - 3, 4):
                    _row_taps_four_filters(rows, f, True, xp[n], taps, weights, i * sh, col, sw, count)
                # ``paired`` is a literal at each call so that the compiler drops the other branch
                # (a runtime flag here measured 1.6x slower)
                if n_out % 4 >= 2:
                    f = n_out - n_out % 4
                    _row_taps(rows[f], rows[f + 1], True, True, xp[n], taps, weights[f], weights[f + 1], i * sh, col,
                              sw, count)
                if n_out % 2:
                    last = n_out - 1
                    _row_taps(rows[last], rows[last], False, True, xp[n], taps, weights[last], weights[last], i * sh,
                              col, sw, count)
                _store_transposed(rows, out[n, i, j : j + count], bias, add_bias, relu)


# The direct loops sum an output row of every filter, (F, W_out) floats, in a scratch block that
# should stay in the 32 KB L1 cache: a row of more than this many floats, if it is at least
# PLANAR_TILE_MIN_WIDTH wide, is summed in tiles of columns of about equal width (the same bits:
# each output's sum is the same). Measured on one thread against whole rows: 1024x1024x1 *
# 5x5x1x32 85 -> 46 ms, 1024x1024x3 * 3x3x3x16 30 -> 22 ms, 512x512x3 * 3x3x3x32 17 -> 12 ms;
# narrower rows lost (300x300x3 * 3x3x3x64 7.9 -> 9.5 ms in tiles of 112 columns).
PLANAR_TILE_FLOATS = 8192
PLANAR_TILE_MIN_WIDTH = 512


@njit(cache=CACHE, nogil=True, inline="always")
def planar_tile(n_out, out_w):
    """Columns per tile of :func:`correlate_planar`'s output rows."""
    if n_out * out_w <= PLANAR_TILE_FLOATS or out_w < PLANAR_TILE_MIN_WIDTH:
        return out_w
    tiles = -(-n_out * out_w // PLANAR_TILE_FLOATS)
    return min(out_w, max(64, (-(-out_w // tiles) + 15) // 16 * 16))


@njit(cache=CACHE, nogil=True, inline="always")
def _last_row(taps):
    """The largest row offset in a tap list."""
    last = taps[0, 0]
    for t in range(1, taps.shape[0]):
        last = max(last, taps[t, 0])
    return last


@njit(cache=CACHE, nogil=True, inline="always")
def _column_taps_clipped(dst, src, taps, weights, row_shift):
    """``dst[j] = sum_t weights[t] * src[taps[t, 0] + row_shift, j]`` over the taps whose row lies
    inside ``src``: rows outside are zero padding, which adds nothing."""
    dst[:] = 0.0
    for t in range(taps.shape[0]):
        r, weight = taps[t, 0] + row_shift, weights[t]
        if weight != 0 and 0 <= r < src.shape[0]:
            row = src[r]
            for j in range(dst.shape[0]):
                dst[j] += weight * row[j]


@njit(cache=CACHE, nogil=True)
def correlate_separable(xp, pad_top, pad_left, col_taps, col_weights, group_taps, group_weights, row_taps,
                        row_weights, sh, sw, padded_w, bias, add_bias, relu, out, row_start, row_stop):
    """Cross-correlation with rank-1 kernels: a column pass, then a row pass.

    ``xp`` is (N, C*Hs, Ws): the padded planar input (``pad_top = pad_left = 0``) or, for
    one channel, the image itself (N, H, W) with the padding ``pad_top``/``pad_left`` still
    to apply, which spares the padded copy: the column pass skips rows outside the image, and
    its rows are copied into the middle of scratch rows ``padded_w`` wide whose border stays
    zero. ``out`` is NHWC.
    For output row ``i`` of filter ``f`` and input channel ``c``, the column taps
    ``col_taps[f, c, t] = (c*Hp + u*dh, 0)`` sum source rows ``i*sh - pad_top + u*dh`` into the
    scratch row, and the row taps ``row_taps[f, c, t] = (0, v*dw)`` sum shifts of it:
    ``kh + kw`` instead of ``kh * kw`` operations per output.

    Output rows go ``G = group_weights.shape[2]`` (4 or 2) at a time through the column
    pass: ``group_taps[f, c]`` are the source rows that rows ``i .. i+G-1`` use (they
    overlap) and ``group_weights[f, c, k]`` their weights for row ``i + k``, so each source
    row is loaded once for all of them; rows left over at the end of a band, and rows whose
    taps reach outside the source, go one at a time. ``bias``, ``add_bias`` and ``relu`` are
    applied as each row is stored, as in :func:`correlate_planar`.
    """
    n_img, out_w, n_out = out.shape[0], out.shape[2], out.shape[3]
    channels, src_h, src_w = col_taps.shape[1], xp.shape[1], xp.shape[2]
    group = group_weights.shape[2]
    column = np.empty((group, src_w), np.float32)  # the column pass's rows
    # with a left/right padding to apply, the row pass reads rows with zero borders
    add_border = src_w != padded_w
    scratch = np.zeros((group, padded_w), np.float32) if add_border else column
    rows = np.empty((group, n_out, out_w), np.float32)
    for n in range(n_img):
        for i in range(row_start, row_stop, group):
            count = min(group, row_stop - i)
            shift = i * sh - pad_top
            for f in range(n_out):
                for c in range(channels):
                    # the column pass starts the scratch rows from zero, the row pass starts the
                    # output rows from zero at the first channel (``fresh``)
                    taps = group_taps[f, c]
                    inside = shift >= 0 and shift + _last_row(taps) < src_h
                    if inside and count == 4 and group == 4:
                        _row_taps_four_filters(column, 0, True, xp[n], taps, group_weights[f, c], shift, 0, 1, src_w)
                    elif inside and count == 2 and group == 2:
                        _row_taps(column[0], column[1], True, True, xp[n], taps, group_weights[f, c, 0],
                                  group_weights[f, c, 1], shift, 0, 1, src_w)
                    else:  # the last rows of a band, or rows near the top or bottom edge
                        for k in range(count):
                            _column_taps_clipped(column[k], xp[n], col_taps[f, c], col_weights[f, c],
                                                 shift + k * sh)
                    if add_border:
                        scratch[:count, pad_left : pad_left + src_w] = column[:count]
                    for k in range(count):
                        if sw == 1:
                            _row_taps_by_eight(rows[k, f], c == 0, scratch[k : k + 1], row_taps[f, c],
                                               row_weights[f, c], out_w)
                        else:
                            _row_taps(rows[k, f], rows[k, f], False, c == 0, scratch[k : k + 1], row_taps[f, c],
                                      row_weights[f, c], row_weights[f, c], 0, 0, sw, out_w)
            for k in range(count):
                _store_transposed(rows[k], out[n, i + k], bias, add_bias, relu)


@njit(cache=CACHE, nogil=True, inline="always")
def _outputs_inside(offset, stride, size, out_size):
    """The outputs ``[start, stop)`` (of ``out_size``) whose cell ``j*stride + offset`` lies
    inside ``[0, size)``."""
    start = max(0, -(offset // stride)) if offset < 0 else 0
    return start, min(out_size, (size - 1 - offset) // stride + 1)


@njit(cache=CACHE, nogil=True)
def correlate_depthwise(x, w, sh, sw, dh, dw, pad_top, pad_left, bias, add_bias, relu, out, row_start, row_stop):
    """Depthwise cross-correlation of NHWC ``x`` with ``w`` (fh, fw, C, M), output rows
    ``[row_start, row_stop)``:

    ``out[n, i, j, c*M + m] = sum_{u, v} x[n, i*sh + u*dh - pad_top, j*sw + v*dw - pad_left, c] * w[u, v, c, m]``

    over the taps that fall inside the image (the others are zero padding), summed in the
    order ``u``, then ``v``, then ``bias`` and ``relu`` as in :func:`correlate_planar`. The
    innermost loop runs over the channels of one pixel, which lie next to each other in NHWC,
    so it vectorises for the many channels of a network's depthwise layers. Each output row
    is summed in place, in the C-contiguous ``out``.
    """
    n_img, height, width, channels = x.shape
    fh, fw, mult = w.shape[0], w.shape[1], w.shape[3]
    out_w, n_out = out.shape[2], out.shape[3]
    # the outputs j whose columns are all inside the image: the first tap's and the last tap's
    inner_start = _outputs_inside(-pad_left, sw, width, out_w)[0]
    inner_stop = max(inner_start, _outputs_inside((fw - 1) * dw - pad_left, sw, width, out_w)[1])
    for n in range(n_img):
        for i in range(row_start, row_stop):
            total = out[n, i]  # (out_w, n_out): summed tap by tap
            top = i * sh - pad_top
            unrolled = (fh == 3 and fw == 3 and mult == 1 and top >= 0 and top + 2 * dh < height)
            if unrolled:  # the inner outputs are written whole; the others summed from zero below
                total[:inner_start] = 0.0
                total[inner_stop:] = 0.0
                _depthwise_3x3_row(x[n], w, top, dh, sw, dw, pad_left, inner_start, inner_stop, total)
            else:
                total[:] = 0.0
            for u in range(fh):
                r = i * sh + u * dh - pad_top
                if r < 0 or r >= height:
                    continue
                for v in range(fw):
                    offset = v * dw - pad_left
                    j_start, j_stop = _outputs_inside(offset, sw, width, out_w)
                    taps = w[u, v].reshape(n_out)
                    for j in range(j_start, j_stop):
                        if unrolled and inner_start <= j < inner_stop:
                            continue
                        pixel, acc = x[n, r, j * sw + offset], total[j]
                        if mult == 1:
                            for c in range(channels):
                                acc[c] += pixel[c] * taps[c]
                        else:
                            for c in range(channels):
                                value = pixel[c]
                                for m in range(mult):
                                    acc[c * mult + m] += value * taps[c * mult + m]
            if add_bias or relu:
                for j in range(out_w):
                    acc = total[j]
                    for k in range(n_out):
                        acc[k] = _finished(acc[k], bias[k], add_bias, relu)


@njit(cache=CACHE, nogil=True, inline="always")
def _depthwise_3x3_row(image, w, top, dh, sw, dw, pad_left, j_start, j_stop, total):
    """``total[j] = `` the nine taps of a 3x3 depthwise kernel (one map per channel) at outputs
    ``j_start .. j_stop`` of a row whose three input rows (from ``top``) and columns are all inside
    the image: the sum of :func:`correlate_depthwise` in its order, from +0.0, in one pass."""
    row0, row1, row2 = image[top], image[top + dh], image[top + 2 * dh]
    w00, w01, w02 = w[0, 0].reshape(-1), w[0, 1].reshape(-1), w[0, 2].reshape(-1)  # contiguous: vectorised
    w10, w11, w12 = w[1, 0].reshape(-1), w[1, 1].reshape(-1), w[1, 2].reshape(-1)
    w20, w21, w22 = w[2, 0].reshape(-1), w[2, 1].reshape(-1), w[2, 2].reshape(-1)
    for j in range(j_start, j_stop):
        q = j * sw - pad_left
        acc = total[j]
        a0, a1, a2 = row0[q], row0[q + dw], row0[q + 2 * dw]
        b0, b1, b2 = row1[q], row1[q + dw], row1[q + 2 * dw]
        c0, c1, c2 = row2[q], row2[q + dw], row2[q + 2 * dw]
        for c in range(acc.shape[0]):
            s = ((np.float32(0.0) + a0[c] * w00[c]) + a1[c] * w01[c]) + a2[c] * w02[c]
            s = ((s + b0[c] * w10[c]) + b1[c] * w11[c]) + b2[c] * w12[c]
            acc[c] = ((s + c0[c] * w20[c]) + c1[c] * w21[c]) + c2[c] * w22[c]


@njit(cache=CACHE, nogil=True, inline="always")
def _window(index, stride, pad_before, size, limit):
    """The cells ``[start, stop)`` of window ``index`` that lie inside ``[0, limit)``."""
    start = index * stride - pad_before
    return max(start, 0), min(start + size, limit)


@njit(cache=CACHE, nogil=True, inline="always")
def _larger(best, value):
    """The max pool's step: ``value`` if it is larger than ``best``, or if ``best`` is NaN and
    ``value`` is not. A window's max is then the max of its cells that are not NaN, as
    TensorFlow's (NaN if all are), in any order; of equal cells (+0.0 and -0.0) the first in the
    order of the steps stays, which is why the numpy twin steps in the kernel's order."""
    # one test for both ("not at most" is true when either is NaN), then one for value's NaN
    return value if (value == value) & (not value <= best) else best


@njit(cache=CACHE, nogil=True, inline="always")
def _pool_windows(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop, average):
    """The window loop of both pools: the max of the cells of each window that lie inside the
    image (padding cells are ignored, never zeros) or, with ``average``, their mean (divided by
    the number of those cells, as TensorFlow's SAME average pool does). The max ignores NaN cells
    (:func:`_larger`).

    Each output row in two passes: its windows' image rows reduced into one row (``line``), in
    runs along the rows of the C-contiguous ``x``; then each window's columns of that row
    (:func:`_avg_columns`, :func:`_max_columns`). The average sums each column's cells, then the
    columns, and the max takes each column's max, then the columns' (the numpy twins in the same
    orders). ``average`` is a literal at each call, so the compiler keeps only one reduction in
    the inner loops (each pool compiles to what a loop of its own would be).
    """
    n_img, height, width, channels = x.shape
    out_w = out.shape[2]
    zero = np.float32(0.0)
    flat = x.reshape(-1)
    row_size = width * channels
    # the columns windows read: from column 0 (where window 0 starts, or right of it when it starts
    # in the padding) to the last window's last
    stop_col = _window(out_w - 1, sw, pad_left, pw, width)[1] * channels
    # slices, indexed from 0 by a range: an index the compiler cannot prove non-negative costs
    # a wraparound test on every read, and the loops then ran unvectorised (5x slower)
    line = np.empty(stop_col, np.float32)
    for n in range(n_img):
        for i in range(row_start, row_stop):
            r0, r1 = _window(i, sh, pad_top, ph, height)
            base = (n * height + r0) * row_size
            src = flat[base : base + stop_col]
            if r1 - r0 == 1:
                for k in range(line.size):
                    line[k] = zero + src[k] if average else src[k]
            elif r1 - r0 == 2:  # the first two rows in one run
                other = flat[base + row_size : base + row_size + stop_col]
                for k in range(line.size):
                    value = other[k]
                    if average:
                        line[k] = (zero + src[k]) + value
                    else:
                        line[k] = _larger(src[k], value)
            else:  # ... or three
                other = flat[base + row_size : base + row_size + stop_col]
                third = flat[base + 2 * row_size : base + 2 * row_size + stop_col]
                for k in range(line.size):
                    value, last = other[k], third[k]
                    if average:
                        line[k] = ((zero + src[k]) + value) + last
                    else:
                        line[k] = _larger(_larger(src[k], value), last)
            for r in range(r0 + 3, r1):
                base = (n * height + r) * row_size
                src = flat[base : base + stop_col]
                for k in range(line.size):
                    value = src[k]
                    if average:
                        line[k] += value
                    else:
                        line[k] = _larger(line[k], value)
            if average:
                _avg_columns(line, out[n, i], pw, sw, pad_left, width, r1 - r0)
            else:
                _max_columns(line, out[n, i], pw, sw, pad_left, width, 0)


# The column pass is a function of its own, called once per output row, with one loop for each
# window width. For the 512x512 windows of 32 channels of a 3x3 pool with stride 2, one thread:
# the loop of the rows above with one window loop for every width took 6.4 ms; one loop for the
# inner windows alone, 2.4-2.9 ms, but 6.7 again with the loop of the edge windows in the same
# function, and 12 with a test of the width inside the window loop.
@njit(cache=CACHE, nogil=True, inline="always")
def _pool_columns(line, dst, pw, sw, pad_left, width, rows, average):
    """``dst[j]`` (out_w, C) = the reduction of window ``j``'s columns of ``line``, the row of
    pixels that the row pass made (``rows`` image rows in each of its cells, for the average's
    count). The windows whose columns are all inside the image first, in one loop for their
    width (2, 3, or any), then those at the edges."""
    out_w, channels = dst.shape
    zero = np.float32(0.0)
    # the windows inside: from the first whose first column is not left of the image, to the
    # last whose last column is not right of it
    inner_start = min(out_w, -(-pad_left // sw))
    inner_stop = max(inner_start, min(out_w, (width + pad_left - pw) // sw + 1))
    count = np.float32(rows * pw)
    if pw == 2:
        for j in range(inner_start, inner_stop):
            start = (j * sw - pad_left) * channels
            a, b, cell = line[start : start + channels], line[start + channels : start + 2 * channels], dst[j]
            for c in range(channels):
                if average:
                    cell[c] = ((zero + a[c]) + b[c]) / count
                else:
                    cell[c] = _larger(a[c], b[c])
    elif pw == 3:
        for j in range(inner_start, inner_stop):
            start = (j * sw - pad_left) * channels
            a, b = line[start : start + channels], line[start + channels : start + 2 * channels]
            d, cell = line[start + 2 * channels : start + 3 * channels], dst[j]
            for c in range(channels):
                if average:
                    cell[c] = (((zero + a[c]) + b[c]) + d[c]) / count
                else:
                    cell[c] = _larger(_larger(a[c], b[c]), d[c])
    else:
        for j in range(inner_start, inner_stop):
            cell = dst[j]
            _reduce_cells(line, cell, j * sw - pad_left, pw, average)
            if average:
                for c in range(channels):
                    cell[c] /= count
    for j in range(out_w):
        if inner_start <= j < inner_stop:
            continue
        q0, q1 = _window(j, sw, pad_left, pw, width)
        cell = dst[j]
        _reduce_cells(line, cell, q0, q1 - q0, average)
        if average:
            edge_count = np.float32(rows * (q1 - q0))
            for c in range(channels):
                cell[c] /= edge_count


@njit(cache=CACHE, nogil=True, inline="always")
def _reduce_cells(line, cell, first, cells, average):
    """``cell`` = the sum (from +0.0) or the max of ``line``'s pixels ``first .. first + cells``."""
    channels, zero = cell.shape[0], np.float32(0.0)
    a = line[first * channels : (first + 1) * channels]
    for c in range(channels):
        cell[c] = zero + a[c] if average else a[c]
    for q in range(first + 1, first + cells):
        b = line[q * channels : (q + 1) * channels]
        for c in range(channels):
            if average:
                cell[c] += b[c]
            else:
                cell[c] = _larger(cell[c], b[c])


@njit(nogil=True)  # not cached on its own: it is compiled into the pool that calls it
def _avg_columns(line, dst, pw, sw, pad_left, width, rows):
    """The average pool's column pass (see :func:`_pool_columns`)."""
    _pool_columns(line, dst, pw, sw, pad_left, width, rows, True)


@njit(nogil=True)  # not cached on its own: it is compiled into the pool that calls it
def _max_columns(line, dst, pw, sw, pad_left, width, rows):
    """The max pool's column pass (see :func:`_pool_columns`)."""
    _pool_columns(line, dst, pw, sw, pad_left, width, rows, False)


@njit(cache=CACHE, nogil=True)
def max_pool(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop):
    """Max over each window; cells outside the image are ignored (never zeros)."""
    _pool_windows(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop, False)


@njit(cache=CACHE, nogil=True)
def avg_pool(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop):
    """Mean over each window, dividing by the number of cells inside the image."""
    _pool_windows(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop, True)


@njit(cache=CACHE, nogil=True)
def winograd_input(source, n, block_row, rows, blocks_w, v):
    """Winograd F(2x2, 3x3)'s input transform ``B^T d B`` of the 4x4 blocks of image ``n`` of the
    padded NHWC ``source`` whose outputs start at block rows ``block_row .. +rows`` and every block
    column, into the first ``rows * blocks_w`` rows of ``v`` (16, at least that many, C): first
    along the block's rows, then its columns. The first pass runs once per column of a block
    row, which the blocks two columns apart share (the same sums as per block)."""
    channels = source.shape[3]
    t = np.empty((4, 2 * blocks_w + 2, channels), np.float32)  # B^T d of each column of a block row
    for r in range(rows):
        top = 2 * (block_row + r)
        for b in range(2 * blocks_w + 2):
            d0, d1 = source[n, top, b], source[n, top + 1, b]
            d2, d3 = source[n, top + 2, b], source[n, top + 3, b]
            t0, t1, t2, t3 = t[0, b], t[1, b], t[2, b], t[3, b]
            for c in range(channels):
                t0[c] = d0[c] - d2[c]
                t1[c] = d1[c] + d2[c]
                t2[c] = d2[c] - d1[c]
                t3[c] = d1[c] - d3[c]
        for j in range(blocks_w):
            k = r * blocks_w + j
            left = 2 * j
            for a in range(4):
                t0, t1, t2, t3 = t[a, left], t[a, left + 1], t[a, left + 2], t[a, left + 3]
                v0, v1, v2, v3 = v[4 * a, k], v[4 * a + 1, k], v[4 * a + 2, k], v[4 * a + 3, k]
                for c in range(channels):
                    v0[c] = t0[c] - t2[c]
                    v1[c] = t1[c] + t2[c]
                    v2[c] = t2[c] - t1[c]
                    v3[c] = t1[c] - t3[c]


@njit(cache=CACHE, nogil=True)
def winograd_output(m, bias, add_bias, target, block_row, rows, blocks_w):
    """Winograd F(2x2, 3x3)'s output transform ``A^T m A`` of the products in the first
    ``rows * blocks_w`` rows of ``m`` (16, at least that many, F), rows of the block first, then
    columns, plus ``bias`` when ``add_bias``, into the output rows of block rows
    ``block_row .. +rows`` of the (H, W, F) image ``target`` (the cells of a block beyond its
    bottom or right edge are dropped)."""
    out_h, out_w, n_out = target.shape
    y = np.empty((4, n_out), np.float32)  # one block's 2x2 outputs, for the blocks cut by an edge
    for r in range(rows):
        top = 2 * (block_row + r)
        for j in range(blocks_w):
            k = r * blocks_w + j
            left = 2 * j
            whole = top + 1 < out_h and left + 1 < out_w
            if whole:
                y00, y01 = target[top, left], target[top, left + 1]
                y10, y11 = target[top + 1, left], target[top + 1, left + 1]
            else:
                y00, y01, y10, y11 = y[0], y[1], y[2], y[3]
            m0, m1, m2, m3, m4, m5, m6, m7 = m[0, k], m[1, k], m[2, k], m[3, k], m[4, k], m[5, k], m[6, k], m[7, k]
            m8, m9, m10, m11, m12, m13, m14, m15 = (m[8, k], m[9, k], m[10, k], m[11, k], m[12, k], m[13, k],
                                                    m[14, k], m[15, k])
            for f in range(n_out):
                h00 = m0[f] + m4[f] + m8[f]
                h01 = m1[f] + m5[f] + m9[f]
                h02 = m2[f] + m6[f] + m10[f]
                h03 = m3[f] + m7[f] + m11[f]
                h10 = m4[f] - m8[f] - m12[f]
                h11 = m5[f] - m9[f] - m13[f]
                h12 = m6[f] - m10[f] - m14[f]
                h13 = m7[f] - m11[f] - m15[f]
                if add_bias:
                    b = bias[f]
                    y00[f] = h00 + h01 + h02 + b
                    y01[f] = h01 - h02 - h03 + b
                    y10[f] = h10 + h11 + h12 + b
                    y11[f] = h11 - h12 - h13 + b
                else:
                    y00[f] = h00 + h01 + h02
                    y01[f] = h01 - h02 - h03
                    y10[f] = h10 + h11 + h12
                    y11[f] = h11 - h12 - h13
            if not whole:
                target[top, left] = y00
                if left + 1 < out_w:
                    target[top, left + 1] = y01
                if top + 1 < out_h:
                    target[top + 1, left] = y10


@njit(cache=CACHE, nogil=True, inline="always")
def _winograd_g(g0, g1, g2, u0, u1, u2, u3):
    """``G`` of F(2x2, 3x3) along one axis of a kernel, over the filters of rows ``g0 .. g2``:
    ``u0 .. u3`` = ``g0``, ``(g0 + g2 + g1) / 2``, ``(g0 + g2 - g1) / 2``, ``g2``."""
    half = np.float32(0.5)
    for f in range(g0.shape[0]):
        s = g0[f] + g2[f]
        u0[f] = g0[f]
        u1[f] = (s + g1[f]) * half
        u2[f] = (s - g1[f]) * half
        u3[f] = g2[f]


@njit(cache=CACHE, nogil=True)
def winograd_filters(w, out, start, stop):
    """Winograd F(2x2, 3x3)'s filter transform ``G g G^T`` of input channels ``start .. stop`` of
    the (3, 3, C, F) bank ``w`` into the (16, C, F) ``out``, with ``G`` = [[1, 0, 0], [1/2, 1/2,
    1/2], [1/2, -1/2, 1/2], [0, 0, 1]]: first along the kernel's rows, then its columns."""
    t = np.empty((4, 3, w.shape[3]), np.float32)  # G g of one channel
    for c in range(start, stop):
        for v in range(3):
            _winograd_g(w[0, v, c], w[1, v, c], w[2, v, c], t[0, v], t[1, v], t[2, v], t[3, v])
        for a in range(4):
            _winograd_g(t[a, 0], t[a, 1], t[a, 2], out[4 * a, c], out[4 * a + 1, c], out[4 * a + 2, c],
                        out[4 * a + 3, c])


# Winograd F(2x2, 5x5): 6x6 input blocks for 2x2 outputs, its points 0, 1, -1, 2, -1/2 and
# infinity (of the sets tried, the one whose float32 results stay nearest the exact sums).
@njit(cache=CACHE, nogil=True, inline="always")
def _winograd5_b(d0, d1, d2, d3, d4, d5, u0, u1, u2, u3, u4, u5):
    """``B^T`` of F(2x2, 5x5) along one axis of the blocks, over the channels of ``d0 .. d5``.

    One loop per output row: a loop writing six rows and reading six needs more run-time checks
    that they do not overlap than the compiler makes before it vectorises, and ran unvectorised."""
    half, one_half, two, five_halves = np.float32(0.5), np.float32(1.5), np.float32(2.0), np.float32(2.5)
    for c in range(d0.shape[0]):
        u0[c] = d0[c] + one_half * d1[c] - two * d2[c] - one_half * d3[c] + d4[c]
    for c in range(d0.shape[0]):
        u1[c] = d4[c] - d1[c] - five_halves * d2[c] - half * d3[c]
    for c in range(d0.shape[0]):
        u2[c] = d4[c] + d1[c] + half * d2[c] - five_halves * d3[c]
    for c in range(d0.shape[0]):
        u3[c] = d4[c] - d2[c] + half * (d3[c] - d1[c])
    for c in range(d0.shape[0]):
        u4[c] = d4[c] - d2[c] + two * (d1[c] - d3[c])
    for c in range(d0.shape[0]):
        u5[c] = d5[c] + d1[c] + one_half * d2[c] - two * d3[c] - one_half * d4[c]


@njit(cache=CACHE, nogil=True)
def winograd5_input(source, n, block_row, rows, blocks_w, v):
    """:func:`winograd_input` of F(2x2, 5x5): 6x6 blocks, into 36 matrices (the blocks two
    columns apart share four of their six columns' first pass)."""
    channels = source.shape[3]
    t = np.empty((6, 2 * blocks_w + 4, channels), np.float32)  # B^T d of each column of a block row
    for r in range(rows):
        top = 2 * (block_row + r)
        for b in range(2 * blocks_w + 4):
            _winograd5_b(source[n, top, b], source[n, top + 1, b], source[n, top + 2, b],
                         source[n, top + 3, b], source[n, top + 4, b], source[n, top + 5, b],
                         t[0, b], t[1, b], t[2, b], t[3, b], t[4, b], t[5, b])
        for j in range(blocks_w):
            k = r * blocks_w + j
            left = 2 * j
            for a in range(6):
                _winograd5_b(t[a, left], t[a, left + 1], t[a, left + 2], t[a, left + 3], t[a, left + 4],
                             t[a, left + 5], v[6 * a, k], v[6 * a + 1, k], v[6 * a + 2, k], v[6 * a + 3, k],
                             v[6 * a + 4, k], v[6 * a + 5, k])


@njit(cache=CACHE, nogil=True, inline="always")
def _winograd5_a(m0, m1, m2, m3, m4, m5, y0, y1):
    """``A^T`` of F(2x2, 5x5) along one axis of the blocks, over the filters of ``m0 .. m5``."""
    half, two = np.float32(0.5), np.float32(2.0)
    for f in range(m0.shape[0]):
        y0[f] = m0[f] + m1[f] + m2[f] + m3[f] + m4[f]
        y1[f] = m1[f] - m2[f] + two * m3[f] - half * m4[f] + m5[f]


@njit(cache=CACHE, nogil=True)
def winograd5_output(m, bias, add_bias, target, block_row, rows, blocks_w):
    """:func:`winograd_output` of F(2x2, 5x5): from 36 matrices (the bias added to each finished
    output)."""
    out_h, out_w, n_out = target.shape
    h = np.empty((2, 6, n_out), np.float32)  # A^T m of one block
    y = np.empty((2, 2, n_out), np.float32)
    for r in range(rows):
        top = 2 * (block_row + r)
        for j in range(blocks_w):
            k = r * blocks_w + j
            left = 2 * j
            for b in range(6):
                _winograd5_a(m[b, k], m[6 + b, k], m[12 + b, k], m[18 + b, k], m[24 + b, k], m[30 + b, k],
                             h[0, b], h[1, b])
            for a in range(2):
                _winograd5_a(h[a, 0], h[a, 1], h[a, 2], h[a, 3], h[a, 4], h[a, 5], y[a, 0], y[a, 1])
            for a in range(min(2, out_h - top)):
                for b in range(min(2, out_w - left)):
                    row, cell = target[top + a, left + b], y[a, b]
                    if add_bias:
                        for f in range(n_out):
                            row[f] = cell[f] + bias[f]
                    else:
                        row[:] = cell


@njit(cache=CACHE, nogil=True, inline="always")
def _winograd5_g(g0, g1, g2, g3, g4, u0, u1, u2, u3, u4, u5):
    """``G`` of F(2x2, 5x5) along one axis of a kernel, over the filters of rows ``g0 .. g4``."""
    two, four, eight, sixteen = np.float32(2.0), np.float32(4.0), np.float32(8.0), np.float32(16.0)
    third, fifteenth = np.float32(1.0 / 3.0), np.float32(1.0 / 15.0)
    for f in range(g0.shape[0]):  # one loop per output row, as in _winograd5_b
        u0[f] = g0[f]
    for f in range(g0.shape[0]):
        u1[f] = (g0[f] + g1[f] + g2[f] + g3[f] + g4[f]) * -third
    for f in range(g0.shape[0]):
        u2[f] = (g0[f] - g1[f] + g2[f] - g3[f] + g4[f]) * third
    for f in range(g0.shape[0]):
        u3[f] = (g0[f] + two * g1[f] + four * g2[f] + eight * g3[f] + sixteen * g4[f]) * fifteenth
    for f in range(g0.shape[0]):
        u4[f] = (sixteen * g0[f] - eight * g1[f] + four * g2[f] - two * g3[f] + g4[f]) * -fifteenth
    for f in range(g0.shape[0]):
        u5[f] = g4[f]


@njit(cache=CACHE, nogil=True)
def winograd5_filters(w, out, start, stop):
    """Winograd F(2x2, 5x5)'s filter transform ``G g G^T`` of input channels ``start .. stop`` of
    the (5, 5, C, F) bank ``w`` into the (36, C, F) ``out``: first along the kernel's rows, then
    its columns (memory-bound: a 5x5x256x256 bank reads 6.5 MB and writes 9.4 MB)."""
    n_out = w.shape[3]
    t = np.empty((6, 5, n_out), np.float32)  # G g of one channel
    for c in range(start, stop):
        for v in range(5):
            _winograd5_g(w[0, v, c], w[1, v, c], w[2, v, c], w[3, v, c], w[4, v, c],
                         t[0, v], t[1, v], t[2, v], t[3, v], t[4, v], t[5, v])
        for a in range(6):
            _winograd5_g(t[a, 0], t[a, 1], t[a, 2], t[a, 3], t[a, 4], out[6 * a, c], out[6 * a + 1, c],
                         out[6 * a + 2, c], out[6 * a + 3, c], out[6 * a + 4, c], out[6 * a + 5, c])


# --- the blocked path: outer products of a block of pixels and vectors of filters -------------
# A vector of LANES filters (16 in one AVX-512 register, or 8 in one AVX2 register) is multiplied
# by each of a block's pixels' values and added to vector sums that stay in registers, as a BLAS
# kernel does (see BLOCK_PIXELS). Numba
# leaves such a block of scalars unvectorised (it turns LLVM's SLP vectoriser off), so the run
# is written as LLVM vectors directly. Each output sums its window in the window's order, in
# pieces each summed from +0.0 and then added in order: as many whole window rows as
# DEPTH_PIECE products hold, or a longer row in pieces of DEPTH_PIECE products (one sequential
# sum rounds more: over 7x7x512 windows it drifted to 8e-6 of the output's magnitude against
# TensorFlow; in pieces the sweep's largest difference is 3.9e-6, as with BLAS's paths), with
# fused multiply-adds (``llvm.fma``: rounded once; the same bits on every CPU and for any lane
# count). The result differs from the other paths' by float32 rounding only; this path has no
# numpy twin, and the cost model offers it only where Numba runs.


# Pixels per block, and vectors of filters a run of the blocked kernel makes sums for: each
# value read from the image serves every vector of the run, each vector of filters every pixel.
# With AVX-512 (32 registers of 16 floats), 8 pixels by two vectors: 16 sums, the two vectors of
# filters and a broadcast value (one thread, the kernel alone, medians of 5 alternating
# processes, two vectors against one: 7x7x128 * 7x7x128x128 with stride 2 0.254 -> 0.201 ms,
# 112x112x256 * 3x3x256x64 with stride 2 13.2 -> 11.3 ms, 224x224x64 * 3x3x64x64 with stride 2
# 12.2 -> 11.6 ms). With AVX2 (16 registers of 8 floats), 6 pixels by two vectors: 12 sums and
# 3 registers more, the shape of BLAS's own AVX2 kernels; 8 pixels by one vector, as this path
# first ran there, read 9 values for 8 multiply-adds and spilled a sum to the stack (a 2-vCPU
# Zen3, one thread, medians of 7 calls: 224x224x32 * 5x5x32x32 with stride 2 17.8 -> 9.5 ms,
# 56x56x256 * 5x5x256x256 with stride 2 72.5 -> 45.0, 112x112x64 * 3x3x64x64 with stride 2
# 7.8 -> 5.0, 7x7x128 * 7x7x128x128 with stride 2 1.03 -> 0.59). An output's sum is the same
# whatever the block: the same bits on both.
BLOCK_PIXELS = 8 if LANES == 16 else 6
BLOCKED_WIDE = 2
# Products of a sum taken at a time over the blocks of a group of rows: their (DEPTH_PIECE,
# LANES) filters, 256 lines of the bank, stay in cache while the blocks go by (measured on one
# thread, when the path still read interleaved strips, pieces against whole sums: 512x512x16 *
# 5x5x16x16 42.7 against 42.4 ms, 1024x1024x16 * 5x5x16x16 with stride 2, 55.0 against 55.2;
# at 128, 43.5 and 53.1: the pieces are for the rounding).
DEPTH_PIECE = 256
GATHER_MIN_RUNS = 8


def _outer_run(pixels: int, vectors: int = 1, direct: bool = False):
    """The LLVM function (a definer of it in a module) ``run(src, start, step, row_step, rows, wt,
    w_start, w_step, count, sums)``: for p < ``pixels``, u < ``rows`` and k < ``count``,
    ``sums[p] += src[start + p*step + u*row_step + k] *
    wt[w_start + (u*count + k)*w_step :][:LANES]``, each ``sums[p]`` (LANES floats of ``sums``)
    in a register and summed in the order of u and k: ``rows`` window rows of ``count`` values
    each, whose filters are adjacent rows of the bank.
    The loop is a function of its own, never inlined: inside the kernel's loops its pointers
    would not stay in registers (measured on one thread: 512x512x16 * 5x5x16x16 53.7 ms inlined,
    44.3 out of line).

    With ``vectors`` > 1 the run is that of ``vectors`` adjacent vectors of filters at once (the
    next vector's at ``wt[w_start + LANES + (u*count + k)*w_step :]``), each broadcast value used
    by all of them; the sums of vector v are at ``sums[v*BLOCK_PIXELS*LANES + p*LANES :]``.

    ``direct``: the run of a whole sum, finished and stored (``run(src, start, step, row_step,
    rows, wt, w_start, w_step, count, dst, stride, bias, add_bias, relu)``): pixel p's sums for
    vector v, with the bias ``bias[v*LANES :][:LANES]`` and the ReLU of :func:`_finished`, at
    ``dst[p*stride + v*LANES :]``. The same bits as adding them to sums of +0.0 and storing
    those: a sum begun at +0.0 is never -0.0."""
    name = (f"convfilter_outer_run_{pixels}x{LANES}" + (f"x{vectors}" if vectors > 1 else "")
            + ("_stored" if direct else ""))

    def define(module):
        vector, pointer = _vector_type(LANES)
        i64, floats = _I64, _FLOATS
        stored = [floats, i64, floats, i64, i64] if direct else [floats]
        function, new = _out_of_line(module, name, [floats, i64, i64, i64, i64, floats, i64, i64, i64, *stored])
        if not new:
            return function
        src, start, step, row_step, rows, wt, w_start, w_step, count = function.args[:9]
        builder = ir.IRBuilder(function.append_basic_block("entry"))
        fma = cgutils.get_or_insert_function(module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{LANES}f32")
        slots, firsts = {}, []
        zero = ir.Constant(vector, [0.0] * LANES)
        for p in range(pixels):
            for v in range(vectors):
                slots[v, p] = builder.alloca(vector)  # promoted to a register
                builder.store(zero, slots[v, p])
            firsts.append(builder.gep(src, [builder.add(start, builder.mul(step, ir.Constant(i64, p)))]))
        with cgutils.for_range(builder, rows) as row_loop:
            u = row_loop.index
            row_firsts = [builder.gep(first, [builder.mul(u, row_step)]) for first in firsts]
            filters = builder.gep(wt, [builder.add(w_start, builder.mul(builder.mul(u, count), w_step))])
            with cgutils.for_range(builder, count) as loop:
                k = loop.index
                column = builder.gep(filters, [builder.mul(k, w_step)])
                weights = [builder.load(builder.bitcast(builder.gep(column, [ir.Constant(i64, v * LANES)]), pointer),
                                        align=4) for v in range(vectors)]
                for p in range(pixels):
                    value = builder.load(builder.gep(row_firsts[p], [k]))
                    values = _spread(builder, value, LANES)
                    for v in range(vectors):
                        builder.store(builder.call(fma, [values, weights[v], builder.load(slots[v, p])]),
                                      slots[v, p])
        if direct:
            dst, stride, bias, add_bias, relu = function.args[9:]
            add_bias, relu = _flag(builder, add_bias), _flag(builder, relu)
            for v in range(vectors):
                bias_vector = builder.load(builder.bitcast(builder.gep(bias, [ir.Constant(i64, v * LANES)]), pointer),
                                           align=4)
                for p in range(pixels):
                    value = _finish_vector(builder, builder.load(slots[v, p]), bias_vector, add_bias, relu)
                    offset = builder.add(builder.mul(stride, ir.Constant(i64, p)), ir.Constant(i64, v * LANES))
                    builder.store(value, builder.bitcast(builder.gep(dst, [offset]), pointer), align=4)
        else:
            sums = function.args[9]
            for (v, p), slot in slots.items():
                cell = builder.bitcast(builder.gep(sums, [ir.Constant(i64, (v * BLOCK_PIXELS + p) * LANES)]), pointer)
                builder.store(builder.fadd(builder.load(cell, align=4), builder.load(slot)), cell, align=4)
        builder.ret_void()
        return function

    return define


# the runs of blocks of 4 to BLOCK_PIXELS pixels (see conv_paths.blocked_block) by one or two
# vectors of filters, adding to sums or (direct) finishing and storing them
_OUTER_RUNS = {(p, v, d): _outer_run(p, v, d) for p in range(4, BLOCK_PIXELS + 1) for v in (1, 2) for d in (0, 1)}


def _run_switch(context, builder, signature, args, direct, arguments):
    """A call of the out-of-line run of ``args[0]`` pixels by ``args[1]`` vectors (direct or not)
    with ``arguments``: a switch over the functions of _OUTER_RUNS."""
    pixels_, vectors_ = (context.cast(builder, args[i], signature.args[i], types.int64) for i in (0, 1))
    key = builder.add(builder.mul(pixels_, ir.Constant(_I64, 4)), vectors_)
    done = builder.append_basic_block("run_done")
    switch = builder.switch(key, done)
    for (p, v, d), define in _OUTER_RUNS.items():
        if d != direct:
            continue
        block = builder.append_basic_block(f"run_{p}x{v}")
        switch.add_case(ir.Constant(_I64, 4 * p + v), block)
        with builder.goto_block(block):
            builder.call(define(builder.module), arguments)
            builder.branch(done)
    builder.position_at_end(done)


def _source_data(context, builder, signature, args):
    """The data of ``args[3]`` if the flag ``args[4]`` is set, else of ``args[2]``: chosen in the
    generated code. An array variable chosen in the kernel's loop is counted in and out (Numba's
    reference counts) at every block: 2-4% of the kernel's time in a first version."""
    src, edge = (context.make_array(signature.args[i])(context, builder, args[i]).data for i in (2, 3))
    return builder.select(_flag(builder, args[4]), edge, src)


@intrinsic
def _outer_run_of(typingctx, pixels, vectors, src, edge, use_edge, start, step, row_step, rows, wt, w_start, w_step,
                  count, sums, sums_start):
    """The run of ``pixels`` (4 to BLOCK_PIXELS) pixels by ``vectors`` (1 or 2) vectors of
    filters over ``rows`` window rows (see :func:`_outer_run`) of ``edge`` if ``use_edge`` is
    set, else of ``src``, into the sums at ``sums[sums_start:]``: a switch over one out-of-line
    function per shape."""
    def codegen(context, builder, signature, args):
        data = [context.make_array(signature.args[i])(context, builder, args[i]).data for i in (9, 13)]
        i64 = [context.cast(builder, args[i], signature.args[i], types.int64) for i in (5, 6, 7, 8, 10, 11, 12, 14)]
        _run_switch(context, builder, signature, args, 0,
                    [_source_data(context, builder, signature, args), *i64[:4], data[0], *i64[4:7],
                     builder.gep(data[1], [i64[7]])])
        return context.get_dummy_value()

    return (types.void(pixels, vectors, src, edge, use_edge, start, step, row_step, rows, wt, w_start, w_step, count,
                       sums, sums_start), codegen)


@intrinsic
def _outer_store_run_of(typingctx, pixels, vectors, src, edge, use_edge, start, step, row_step, rows, wt, w_start,
                        w_step, count, target, target_start, stride, bias, f0, add_bias, relu):
    """The direct run (see :func:`_outer_run`) of ``pixels`` pixels by ``vectors`` whole vectors
    of filters f0 .. over ``rows`` window rows of ``edge`` or ``src`` (as :func:`_outer_run_of`):
    a whole sum, finished with ``bias[f0:]`` and stored at ``target[target_start + p*stride :]``."""
    def codegen(context, builder, signature, args):
        data = [context.make_array(signature.args[i])(context, builder, args[i]).data for i in (9, 13, 16)]
        i64 = [context.cast(builder, args[i], signature.args[i], types.int64)
               for i in (5, 6, 7, 8, 10, 11, 12, 14, 15, 17, 18, 19)]
        _run_switch(context, builder, signature, args, 1,
                    [_source_data(context, builder, signature, args), *i64[:4], data[0], *i64[4:7],
                     builder.gep(data[1], [i64[7]]), i64[8], builder.gep(data[2], [i64[9]]), i64[10], i64[11]])
        return context.get_dummy_value()

    return (types.void(pixels, vectors, src, edge, use_edge, start, step, row_step, rows, wt, w_start, w_step, count,
                       target, target_start, stride, bias, f0, add_bias, relu), codegen)


@intrinsic
def _store_vectors(typingctx, sums, sums_start, pixels, target, start, stride, bias, f0, add_bias, relu):
    """``target[start + p*stride :][:LANES] = finished(sums[sums_start + p*LANES :][:LANES])`` for
    p < ``pixels``:
    a block of all LANES filters stored a vector at a time, with the bias ``bias[f0:][:LANES]`` and
    the ReLU of :func:`_finished` (``v + b``, then 0 where it is below 0: NaN and -0.0 stay)."""
    def codegen(context, builder, signature, args):
        _, pointer = _vector_type(LANES)
        sums_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        sums_data = builder.gep(sums_data, [context.cast(builder, args[1], signature.args[1], types.int64)])
        target_data = context.make_array(signature.args[3])(context, builder, args[3]).data
        bias_data = context.make_array(signature.args[6])(context, builder, args[6]).data
        pixels_, start_, stride_, f0_ = args[2], args[4], args[5], args[7]
        add_bias_, relu_ = _flag(builder, args[8]), _flag(builder, args[9])
        bias_vector = builder.load(builder.bitcast(builder.gep(bias_data, [f0_]), pointer), align=4)
        with cgutils.for_range(builder, pixels_) as loop:
            p = loop.index
            cell = builder.gep(sums_data, [builder.mul(p, ir.Constant(p.type, LANES))])
            value = _finish_vector(builder, builder.load(builder.bitcast(cell, pointer), align=4), bias_vector,
                                   add_bias_, relu_)
            destination = builder.gep(target_data, [builder.add(start_, builder.mul(p, stride_))])
            builder.store(value, builder.bitcast(destination, pointer), align=4)
        return context.get_dummy_value()

    return types.void(sums, sums_start, pixels, target, start, stride, bias, f0, add_bias, relu), codegen


@intrinsic
def _gather_vectors(typingctx, src, start, step, count, target, first, stride):
    """``target[first + k*stride :][:LANES] = src[start + k*step :][:LANES]`` for k < ``count``: a
    vector of filters, one row of the bank after another, into the blocked kernel's piece."""
    def codegen(context, builder, signature, args):
        _, pointer = _vector_type(LANES)
        src_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        target_data = context.make_array(signature.args[4])(context, builder, args[4]).data
        start_, step_, count_, first_, stride_ = (context.cast(builder, args[i], signature.args[i], types.int64)
                                                  for i in (1, 2, 3, 5, 6))
        with cgutils.for_range(builder, count_) as loop:
            k = loop.index
            origin = builder.gep(src_data, [builder.add(start_, builder.mul(k, step_))])
            value = builder.load(builder.bitcast(origin, pointer), align=4)
            destination = builder.gep(target_data, [builder.add(first_, builder.mul(k, stride_))])
            builder.store(value, builder.bitcast(destination, pointer), align=4)
        return context.get_dummy_value()

    return types.void(src, start, step, count, target, first, stride), codegen


@njit(cache=CACHE, nogil=True, inline="always")
def _store_lanes(sums, sums_start, target, first, pixels, n_out, f0, bias, add_bias, relu):
    """``target[first + p*n_out + f0 + q] = finished(sums[sums_start + p*LANES + q])`` for the
    filters f0 + q that exist, q < LANES (strict arithmetic: the bias and the ReLU as every other
    path applies them)."""
    if f0 + LANES <= n_out:
        _store_vectors(sums, sums_start, pixels, target, first + f0, n_out, bias, f0, add_bias, relu)
        return
    for p in range(pixels):
        for q in range(n_out - f0):
            target[first + p * n_out + f0 + q] = _finished(sums[sums_start + p * LANES + q], bias[f0 + q], add_bias,
                                                           relu)


@njit(cache=CACHE, nogil=True, inline="always")
def _vector_filters(matrix, tail, vector, row, n_out):
    """Where vector ``vector`` of filters starts at row ``row`` of the bank, read in place, and its
    step from one row to the next: LANES columns of ``matrix``, or the tail's (see
    :func:`correlate_blocked`)."""
    f0 = vector * LANES
    if f0 + LANES <= n_out:
        return matrix, row * n_out + f0, n_out
    return tail, row * LANES, LANES


@njit(cache=CACHE, nogil=True, inline="always")
def _gather_piece(matrix, tail, v0, n_vectors, row, count, n_out, piece, piece_step):
    """Rows ``row .. row + count`` of the bank's vectors ``v0 .. v0 + n_vectors`` of filters, side by
    side in ``piece`` (rows ``piece_step`` floats long): from the bank's rows, n_out floats apart,
    into one run of floats that stays in L1."""
    for v in range(n_vectors):
        filters, w_first, w_step = _vector_filters(matrix, tail, v0 + v, row, n_out)
        _gather_vectors(filters, w_first, w_step, count, piece, v * LANES, piece_step)


@njit(cache=CACHE, nogil=True, inline="always")
def _run_filters(gather, piece, piece_step, matrix, tail, vector, v0, row, n_out):
    """Where a run reads vector ``v0 + vector``'s filters from row ``row`` of the bank on: the
    gathered piece, or (too few runs to repay the gathering) the bank in place."""
    if gather:
        return piece, vector * LANES, piece_step
    return _vector_filters(matrix, tail, v0 + vector, row, n_out)


@njit(cache=CACHE, nogil=True, inline="always")
def _rows_inside(r, rows, dh, first_row, stop_row):
    """``(skip, count)``: of the ``rows`` rows r, r + dh, r + 2*dh ..., the first ``skip`` lie
    above ``first_row`` and the ``count`` after them in first_row .. stop_row (count 0: none)."""
    skip = 0 if r >= first_row else (first_row - r + dh - 1) // dh
    stop = rows if r + (rows - 1) * dh < stop_row else (stop_row - r + dh - 1) // dh
    return skip, max(0, stop - skip)


@njit(cache=CACHE, nogil=True)
def correlate_blocked(x, pad_top, first_row, stop_row, edge, block_table, matrix, tail, fh, fw, sh, sw, dh, bias,
                      add_bias, relu, group, rows_first, wide, out, task_start, task_stop):
    """Tasks ``task_start .. task_stop`` of the NHWC ``x`` correlated with the filters
    ``matrix``: the bank as a flat (fh*fw*C, F) matrix, its rows in the order of a window's run
    ``[u][v][c]``; window columns adjacent (dilation 1 across). The window rows of output row
    i are rows ``i*sh - pad_top + u*dh`` of ``x``, of which only rows ``first_row .. stop_row``
    are read: the others are zeros (a padded copy's rows of zero padding, or the rows above and
    below an image read in place, ``pad_top`` > 0), and the window rows of a piece of the sum
    that fall there are left out of its run (exact: with finite filters each of their products
    is a zero, which leaves a sum that started from +0.0 as it was; a window with no row left
    gives the bias alone). Block ``b`` of a row reads where ``block_table[b]`` says (see
    ``conv_paths.blocked_layout``): its first output column, its pixels, 1 if it reads ``edge``
    instead of ``x`` (the blocks of an image read in place whose windows reach into its columns
    of zero padding: ``edge`` holds the columns they read, see ``conv_paths.blocked_edges``),
    the float of a row of that source where its windows start, and the floats of that row.

    A task is an output row (over all images) and a unit of ``wide`` (1 or 2, see
    BLOCKED_WIDE) vectors of LANES filters, numbered unit after unit: a band of tasks reads its
    units' filters only (on a small map with many filters each thread reads its part of the
    bank). A window row of a pixel is one contiguous run of ``fw*C`` floats of its source row.
    Blocks of 4 to BLOCK_PIXELS pixels (see ``conv_paths.blocked_block``: a row's blocks as even
    as can be) by the unit's vectors of filters: two vectors in one run, otherwise a run per
    vector. When F is not a multiple of LANES the last vector's filters come from ``tail``, their
    (fh*fw*C, LANES) matrix filled up with zero filters (see ``conv_paths.blocked_tail``). The
    last block of a row may overlap the one before, so the output needs at least 4 columns.

    The filters of a piece of the sum (below) are first gathered side by side into ``piece``,
    one run of floats: read in place, a vector's rows lie F floats apart, and with F a multiple
    of 64 or more they share a few of L1's and L2's sets and were read from further out at every
    run (one thread, the kernel alone, medians of 9-25 alternating calls on a Zen3, in place ->
    gathered: 56x56x256 * 5x5x256x256 with stride 2 44.2 -> 35.5 ms, 28x28x256 * 5x5x256x256
    with stride 2 12.3 -> 9.1, 14x14x512 * 3x3x512x512 20.1 -> 15.0, 56x56x64 * 3x3x64x64
    3.6 -> 3.0). A group of rows with fewer than GATHER_MIN_RUNS blocks reads them in place:
    gathering would cost as much as the runs it serves (7x7x128 * 7x7x128x128 with stride 2,
    four runs a piece, 0.47 -> 0.56 ms gathered).

    The rows of a unit are summed ``group`` at a time: each piece of the sum runs over every
    block of the group's rows, so that the piece's filters are read once for them all (from
    cache after the first block), not once a row. With ``rows_first`` the tasks are numbered
    row after row instead (a row's units one after the other, each row alone): each source
    row is read by all the units while it is in cache, for a bank that stays in cache itself
    while a large image goes by. An output's pieces are added in the same order whatever the
    group, the order, the tasks and ``wide``: the same bits.

    A piece is as many whole window rows as DEPTH_PIECE products hold (a row of more is summed
    in pieces of DEPTH_PIECE): one run makes it over its rows, a row of its source apart. A
    window of at most DEPTH_PIECE products (a 1x1 kernel on up to 256 channels, a 3x3 one on up
    to 28) is one piece, and the direct runs finish each output's whole sum (bias, ReLU) and
    store it in the output as they make it, with no sums to clear, add to and store again (the
    same bits: see :func:`_outer_run`), for the whole vectors of filters. With the runs and
    stores given offsets into the arrays instead of slices of them (one thread, the kernel
    alone, medians of 15 alternating calls on a Zen3, before -> after: 224x224x32 * 1x1x32x32
    4.75 -> 2.43 ms, 224x224x16 * 1x1x16x16 3.04 -> 1.13, 56x56x128 * 1x1x128x64 1.23 -> 0.91;
    larger kernels level, 0.96-1.01x), and then the window rows of a piece in one run (one
    piece a row before: 224x224x16 * 3x3x16x16 4.98 -> 4.04 ms, 512x512x16 * 3x3x16x16 with
    stride 2 6.61 -> 6.09, 512x512x16 * 5x5x16x16 41.7 -> 38.6, 112x112x32 * 3x3x32x32 3.01 ->
    2.86; deeper windows level).
    """
    n_img, out_h, out_w, n_out = out.shape
    height, channels = x.shape[1], x.shape[3]
    flat, edge_flat, target = x.reshape(-1), edge.reshape(-1), out.reshape(-1)
    run, step = fw * channels, sw * channels
    # window rows summed in one piece: as many whole rows as DEPTH_PIECE products hold (one
    # longer row is summed in pieces of DEPTH_PIECE)
    rows_per_piece = max(1, DEPTH_PIECE // run)
    blocks = block_table.shape[0]  # a row's blocks
    block_floats = BLOCK_PIXELS * LANES
    row_floats = blocks * wide * block_floats
    sums = np.empty(min(group, task_stop - task_start) * row_floats, np.float32)  # a group's sums, block after block
    piece = np.empty(DEPTH_PIECE * wide * LANES, np.float32)  # a piece's filters (see below)
    out_rows, vectors = n_img * out_h, -(-n_out // LANES)
    units = -(-vectors // wide)  # a task's ``wide`` vectors of filters
    task = task_start
    while task < task_stop:
        # a group of rows of one unit of vectors: rows first .. first + count over all images
        if rows_first:
            first = task // units
            unit, count_rows = task - first * units, 1
        else:
            unit = task // out_rows
            first = task - unit * out_rows
            count_rows = min(group, out_rows - first, task_stop - task)
        v0 = unit * wide
        n_vectors = min(wide, vectors - v0)
        piece_step = n_vectors * LANES  # floats of a row of the piece
        gather = count_rows * blocks >= GATHER_MIN_RUNS
        # one run for both vectors: from the piece, or in place when both are whole (not the tail's)
        pair = n_vectors == 2 and (gather or (v0 + 2) * LANES <= n_out)
        if fh * run <= DEPTH_PIECE and (v0 + n_vectors) * LANES <= n_out:
            # each output's whole sum in one run, finished and stored as it is made
            if gather:
                _gather_piece(matrix, tail, v0, n_vectors, 0, fh * run, n_out, piece, piece_step)
            for t in range(count_rows):
                n, i = divmod(first + t, out_h)
                skip, inside = _rows_inside(i * sh - pad_top, fh, dh, first_row, stop_row)  # (none: the bias alone)
                r = i * sh - pad_top + skip * dh
                for b in range(blocks):
                    src = (n * height + r) * block_table[b, 4] + block_table[b, 3]
                    for v in range(1 if pair else n_vectors):
                        filters, w_first, w_step = _run_filters(gather, piece, piece_step, matrix, tail, v, v0, 0,
                                                                n_out)
                        f0 = (v0 + v) * LANES
                        _outer_store_run_of(block_table[b, 1], 2 if pair else 1, flat, edge_flat, block_table[b, 2],
                                            src, step, dh * block_table[b, 4], inside, filters,
                                            w_first + skip * run * w_step, w_step, run, target,
                                            ((first + t) * out_w + block_table[b, 0]) * n_out + f0, n_out, bias, f0,
                                            add_bias, relu)
            task += count_rows
            continue
        sums[: count_rows * row_floats] = 0.0
        # the sum in pieces of at most DEPTH_PIECE products, each piece over every block of the
        # group's rows, so that its filters stay in cache while the blocks go by
        for u in range(0, fh, rows_per_piece):
            n_rows = min(rows_per_piece, fh - u)  # window rows u .. u + n_rows (several: whole rows)
            for k0 in range(0, run, DEPTH_PIECE):
                count, row = min(DEPTH_PIECE, run - k0), u * run + k0  # (row: the piece's first of the bank)
                gathered = False
                for t in range(count_rows):
                    n, i = divmod(first + t, out_h)
                    skip, inside = _rows_inside(i * sh - pad_top + u * dh, n_rows, dh, first_row, stop_row)
                    if inside == 0:
                        continue
                    if gather and not gathered:
                        _gather_piece(matrix, tail, v0, n_vectors, row, n_rows * count, n_out, piece, piece_step)
                        gathered = True
                    r = i * sh - pad_top + (u + skip) * dh  # the piece's first row that is read
                    for b in range(blocks):
                        src = (n * height + r) * block_table[b, 4] + block_table[b, 3] + k0
                        start = t * row_floats + b * wide * block_floats
                        for v in range(1 if pair else n_vectors):
                            filters, w_first, w_step = _run_filters(gather, piece, piece_step, matrix, tail, v, v0,
                                                                    row, n_out)
                            _outer_run_of(block_table[b, 1], 2 if pair else 1, flat, edge_flat, block_table[b, 2],
                                          src, step, dh * block_table[b, 4], inside, filters,
                                          w_first + skip * count * w_step, w_step, count, sums,
                                          start + v * block_floats)
        for t in range(count_rows):
            for b in range(blocks):
                for v in range(n_vectors):
                    start = t * row_floats + (b * wide + v) * block_floats
                    _store_lanes(sums, start, target, ((first + t) * out_w + block_table[b, 0]) * n_out,
                                 block_table[b, 1], n_out, (v0 + v) * LANES, bias, add_bias, relu)
        task += count_rows
