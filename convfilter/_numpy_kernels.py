"""The kernels of :mod:`convfilter._jit` written with numpy: same signatures, same bits.

Each function performs the float32 operations of its Numba twin in the same
order (Numba compiles them as strict IEEE float32: no fused multiply-add, no
reassociation), vectorised over output rows, columns, images and filters
instead of looped, so its output is bit for bit the same. They need no
compilation and no Numba, which makes them the right choice for a first run
(before Numba's cache holds the kernels) and for work so small that importing
Numba and loading its kernels costs more than the work itself; ``ops`` picks
one module or the other per call.

Mirrored structure worth knowing when editing either file: tap lists are
summed four taps at a time, ``acc + (((w0*s0 + w1*s1) + w2*s2) + w3*s3)``,
starting from ``0 + first group``; the separable kernel's column pass sums
output rows in groups (``group_taps``) where their taps lie inside the
source and one tap after the other (skipping zero weights) elsewhere. Every
rule of that kind here follows one in ``_jit``; tests compare the two
exactly on every path.
"""

from __future__ import annotations

import functools

import numpy as np

ZERO = np.float32(0.0)
# Output rows per block: temporaries of a few hundred kB, which stay in cache.
BLOCK_CELLS = 1 << 16


def _quiet(kernel):
    """No warnings for NaN or infinity (``0 * inf`` on a skipped tap), as the compiled kernels."""
    @functools.wraps(kernel)
    def run(*args):
        with np.errstate(all="ignore"):
            return kernel(*args)

    return run


@_quiet
def pad_planar(x, pad_top, pad_left, out):
    """Copy NHWC ``x`` into the planar (N, C, Hp, Wp) ``out`` at an offset; the border is zeroed."""
    height, width = x.shape[1], x.shape[2]
    out[...] = 0.0
    out[:, :, pad_top : pad_top + height, pad_left : pad_left + width] = x.transpose(0, 3, 1, 2)


@_quiet
def pad_planar_phases(x, stride, pad_top, pad_left, out):
    """Like :func:`pad_planar` into (N, C*stride, Hp, Wq), each padded row's columns dealt into
    ``stride`` phases (see ``_jit``)."""
    height, width = x.shape[1], x.shape[2]
    out[...] = 0.0
    for p in range(stride):
        k0 = (p - pad_left) % stride
        if k0 < width:
            columns = x[:, :, k0::stride].transpose(0, 3, 1, 2)
            first = (k0 + pad_left) // stride
            out[:, p::stride, pad_top : pad_top + height, first : first + columns.shape[3]] = columns


@_quiet
def pad_planar_channel_sum(x, pad_top, pad_left, out):
    """Like :func:`pad_planar` into (N, 1, Hp, Wp), summing the channels of each pixel in order."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    out[...] = 0.0
    total = out[:, 0, pad_top : pad_top + height, pad_left : pad_left + width]
    total[...] = x[..., 0]
    for c in range(1, channels):
        total += x[..., c]


@_quiet
def pad_planar_channel_sum_scaled(x, values, pad_top, pad_left, out):
    """:func:`pad_planar_channel_sum` of ``values[x]`` for 8-bit samples ``x``, a block of rows at a
    time, so that no float copy of the whole image is made (see ``_jit``)."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    out[...] = 0.0
    for lo, hi in _blocks(0, height, width * channels):
        total = out[:, 0, pad_top + lo : pad_top + hi, pad_left : pad_left + width]
        total[...] = values[x[:, lo:hi, :, 0]]
        for c in range(1, channels):
            total += values[x[:, lo:hi, :, c]]


def _blocks(row_start, row_stop, row_cells, multiple=1):
    """``(lo, hi)`` blocks of rows covering ``[row_start, row_stop)``, each about BLOCK_CELLS cells
    and starting at ``row_start`` plus a multiple of ``multiple``."""
    rows = max(multiple, BLOCK_CELLS // max(row_cells, 1) // multiple * multiple)
    return [(lo, min(lo + rows, row_stop)) for lo in range(row_start, row_stop, rows)]


def _tap_sums(acc, fresh, source, weights, shape=()):
    """``acc = (0 if fresh else acc) + (((w0*s0 + w1*s1) + w2*s2) + w3*s3)`` for each group of
    four taps in turn (the ``_four_taps`` loops of ``_jit``); returns ``acc``.

    ``source(t)`` is the array tap ``t`` reads; ``weights[..., t]`` its weight, a scalar or, reshaped
    to ``shape``, one weight per filter (or per row of a group) that broadcasts against it.
    """
    def weight(t):
        return weights[..., t].reshape(shape) if shape else weights[..., t]

    for t in range(0, weights.shape[-1], 4):
        group = weight(t) * source(t)
        for e in range(1, 4):
            group += weight(t + e) * source(t + e)
        if fresh and t == 0:
            acc = np.add(group, ZERO, out=group if acc is None else acc)
        else:
            acc += group
    return acc


def _finish(rows, bias, add_bias, relu):
    """``_finished`` of ``_jit`` on (F, ...) rows of each filter, in place."""
    if add_bias:
        rows += bias.reshape((-1,) + (1,) * (rows.ndim - 1))
    if relu:
        np.putmask(rows, rows < 0, ZERO)  # NaN and -0.0 pass, as in the kernel
    return rows


@_quiet
def finish_rows(target, bias, add_bias, relu):
    """The bias and the ReLU on a tile's (pixels, F) rows, in place (see ``_jit.finish_rows``)."""
    if add_bias:
        target += bias
    if relu:
        np.maximum(target, ZERO, out=target)


@_quiet
def scale_channel(x, w, sh, sw, bias, add_bias, relu, out, row_start, row_stop):
    """A 1x1 kernel on one input channel (see ``_jit.scale_channel``)."""
    out_w = out.shape[2]
    for n in range(out.shape[0]):
        for lo, hi in _blocks(row_start, row_stop, out_w * out.shape[3]):
            values = x[n, lo * sh : (hi - 1) * sh + 1 : sh, : (out_w - 1) * sw + 1 : sw]  # (rows, W_out, 1)
            rows = np.add(ZERO, values * w)
            out[n, lo:hi] = _finish(rows.transpose(2, 0, 1), bias, add_bias, relu).transpose(1, 2, 0)


@_quiet
def correlate_planar(xp, taps, weights, sh, sw, bias, add_bias, relu, out, row_start, row_stop):
    """Direct cross-correlation of a padded planar input (see ``_jit.correlate_planar``)."""
    n_img, out_w, n_out = out.shape[0], out.shape[2], out.shape[3]
    span = (out_w - 1) * sw + 1
    for n in range(n_img):
        for lo, hi in _blocks(row_start, row_stop, out_w * n_out):
            row_span = (hi - lo - 1) * sh + 1

            def source(t, src=xp[n], lo=lo, row_span=row_span):
                r, q = taps[t, 0] + lo * sh, taps[t, 1]
                return src[r : r + row_span : sh, q : q + span : sw]

            rows = _tap_sums(None, True, source, weights, (n_out, 1, 1))
            out[n, lo:hi] = _finish(rows, bias, add_bias, relu).transpose(1, 2, 0)


def _last_row(taps):
    return int(taps[:, 0].max())


def _column_pass(xp, pad_top, col_taps, col_weights, group_taps, group_weights, sh, lo, hi, row_stop):
    """The column pass of ``_jit.correlate_separable`` for output rows ``[lo, hi)`` (``lo`` starts a
    group) of one filter and channel: (N, hi - lo, W) rows of the source summed down its columns.
    """
    n_img, src_h, src_w = xp.shape
    group = group_weights.shape[0]
    column = np.empty((n_img, hi - lo, src_w), np.float32)
    last = _last_row(group_taps)
    # groups summed together: whole, with every tap inside the source (a run of consecutive groups)
    whole = [i for i in range(lo, hi, group)
             if i + group <= row_stop and i * sh - pad_top >= 0 and i * sh - pad_top + last < src_h]
    if whole:
        first, count = whole[0], len(whole)
        step = group * sh

        def source(t):
            r = group_taps[t, 0] + first * sh - pad_top
            return xp[:, r : r + (count - 1) * step + 1 : step, None, :]

        block = column[:, first - lo : first - lo + count * group].reshape(n_img, count, group, src_w)
        _tap_sums(block, True, source, group_weights, (1, 1, group, 1))
    done = set(whole)
    for i in range(lo, hi, group):
        if i in done:
            continue
        for k in range(min(group, row_stop - i)):  # one tap after the other, inside the source
            dst = column[:, i - lo + k]
            dst[...] = 0.0
            shift = (i + k) * sh - pad_top
            for t in range(col_taps.shape[0]):
                r, weight = col_taps[t, 0] + shift, col_weights[t]
                if weight != 0 and 0 <= r < src_h:
                    dst += weight * xp[:, r]
    return column


@_quiet
def correlate_separable(xp, pad_top, pad_left, col_taps, col_weights, group_taps, group_weights, row_taps,
                        row_weights, sh, sw, padded_w, bias, add_bias, relu, out, row_start, row_stop):
    """Cross-correlation with rank-1 kernels (see ``_jit.correlate_separable``)."""
    n_img, out_w, n_out = out.shape[0], out.shape[2], out.shape[3]
    channels, src_w = col_taps.shape[1], xp.shape[2]
    group = group_weights.shape[2]
    span = (out_w - 1) * sw + 1
    for lo, hi in _blocks(row_start, row_stop, n_img * max(padded_w, out_w * n_out), group):
        rows = np.empty((n_out, n_img, hi - lo, out_w), np.float32)
        for f in range(n_out):
            for c in range(channels):
                column = _column_pass(xp, pad_top, col_taps[f, c], col_weights[f, c], group_taps[f, c],
                                      group_weights[f, c], sh, lo, hi, row_stop)
                if src_w != padded_w:  # rows with a zero border left and right
                    scratch = np.zeros(column.shape[:2] + (padded_w,), np.float32)
                    scratch[..., pad_left : pad_left + src_w] = column
                else:
                    scratch = column

                def source(t, taps=row_taps[f, c], scratch=scratch):
                    q = taps[t, 1]
                    return scratch[..., q : q + span : sw]

                _tap_sums(rows[f], c == 0, source, row_weights[f, c])
        out[:, lo:hi] = _finish(rows, bias, add_bias, relu).transpose(1, 2, 3, 0)


@_quiet
def correlate_depthwise(x, w, sh, sw, dh, dw, pad_top, pad_left, bias, add_bias, relu, out, row_start, row_stop):
    """Depthwise cross-correlation of NHWC ``x`` (see ``_jit.correlate_depthwise``): each output
    cell sums its taps inside the image one after the other, ``u`` then ``v``, from +0.0."""
    n_img, height, width, channels = x.shape
    fh, fw, mult = w.shape[0], w.shape[1], w.shape[3]
    out_w, n_out = out.shape[2], out.shape[3]
    taps = w.reshape(fh, fw, n_out)
    for lo, hi in _blocks(row_start, row_stop, n_img * out_w * n_out):
        total = np.zeros((n_img, hi - lo, out_w, channels, mult), np.float32)
        for u in range(fh):
            # the output rows i whose row i*sh + u*dh - pad_top lies inside the image
            i_start = max(lo, -(-(pad_top - u * dh) // sh))
            i_stop = min(hi, (height - 1 + pad_top - u * dh) // sh + 1)
            if i_start >= i_stop:
                continue
            r = i_start * sh + u * dh - pad_top
            rows = x[:, r : r + (i_stop - i_start - 1) * sh + 1 : sh]
            for v in range(fw):
                offset = v * dw - pad_left
                j_start = max(0, -(offset // sw)) if offset < 0 else 0
                j_stop = min(out_w, (width - 1 - offset) // sw + 1)
                if j_start >= j_stop:
                    continue
                q = j_start * sw + offset
                pixels = rows[:, :, q : q + (j_stop - j_start - 1) * sw + 1 : sw, :, None]
                total[:, i_start - lo : i_stop - lo, j_start:j_stop] += pixels * taps[u, v].reshape(channels, mult)
        block = total.reshape(n_img, hi - lo, out_w, n_out).transpose(3, 0, 1, 2)
        out[:, lo:hi] = _finish(block, bias, add_bias, relu).transpose(1, 2, 3, 0)


def _pool_blocks(x, ph, pw, sh, sw, pad_top, pad_left, fill, out, row_start, row_stop):
    """Blocks of output rows ``[lo, hi)`` with ``cell(a, b)``: cell ``(a, b)`` of every window of
    those rows as (N, C, rows, W), read from a padded planar copy of the rows they need (``fill``
    outside the image); planar, so that numpy's inner loops run along rows, not over 3 channels."""
    n_img, height, width, channels = x.shape
    out_w = out.shape[2]
    padded_w = max((out_w - 1) * sw + pw, pad_left + width)
    for lo, hi in _blocks(row_start, row_stop, n_img * out_w * channels):
        top, rows = lo * sh - pad_top, (hi - lo - 1) * sh + ph  # the image rows [top, top + rows)
        slab = np.full((n_img, channels, rows, padded_w), fill, np.float32)
        first, stop = max(top, 0), min(top + rows, height)
        slab[:, :, first - top : stop - top, pad_left : pad_left + width] = x[:, first:stop].transpose(0, 3, 1, 2)

        def cell(a, b, slab=slab, lo=lo, hi=hi):
            return slab[..., a : a + (hi - lo - 1) * sh + 1 : sh, b : b + (out_w - 1) * sw + 1 : sw]

        yield lo, hi, cell


def _window_starts(index, stride, pad_before, limit):
    """The first in-image cell of each window (``_window`` of ``_jit``), for an index array."""
    return np.minimum(np.maximum(index * stride - pad_before, 0), limit - 1)


@_quiet
def max_pool(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop):
    """Max over each window of the cells that are not NaN; cells outside the image are ignored
    (see ``_jit.max_pool``): each column's cells, then the columns, the kernel's order of steps."""
    height, width = x.shape[1], x.shape[2]
    out_w = out.shape[2]
    q0 = _window_starts(np.arange(out_w), sw, pad_left, width)
    first_b = q0 + pad_left - np.arange(out_w) * sw  # each window's first column inside
    # outside cells are NaN, which never wins the kernel's step
    for lo, hi, cell in _pool_blocks(x, ph, pw, sh, sw, pad_top, pad_left, np.nan, out, row_start, row_stop):
        r0 = _window_starts(np.arange(lo, hi), sh, pad_top, height)
        first_a = r0 + pad_top - np.arange(lo, hi) * sh  # each window's first row inside
        columns = np.empty((pw, x.shape[0], x.shape[3], hi - lo, out_w), np.float32)
        for b in range(pw):
            _first_inside(lambda a: cell(a, b), first_a, (slice(None), slice(None)), columns[b])
            _larger(columns[b], (cell(a, b) for a in range(ph)))
        best = _first_inside(lambda b: columns[b], first_b, (Ellipsis,), np.empty_like(columns[0]))
        out[:, lo:hi] = _larger(best, columns).transpose(0, 2, 3, 1)


def _first_inside(cells, first, where, best):
    """``best`` = ``cells(0)``, but ``cells(k)`` at the indices ``i`` (``where + (i,)``) whose
    ``first[i]`` is ``k``: the kernel's first step at each window's first row or column inside."""
    best[...] = cells(0)
    for k in np.unique(first[first > 0]):
        index = where + (first == k,)
        best[index] = cells(k)[index]
    return best


def _larger(best, values):
    """``best`` after ``_jit._larger``'s step with each of ``values`` in turn, element by element,
    in place."""
    if np.isnan(best).any():
        for value in values:
            np.copyto(best, value, where=(value > best) | (np.isnan(best) & ~np.isnan(value)))
    else:  # a NaN never replaces a number, so best stays without NaN: "larger" is the whole step
        for value in values:
            np.copyto(best, value, where=value > best)
    return best


@_quiet
def avg_pool(x, ph, pw, sh, sw, pad_top, pad_left, out, row_start, row_stop):
    """Mean over each window, dividing by the number of cells inside the image (``_jit.avg_pool``)."""
    height, width = x.shape[1], x.shape[2]
    cols = _inside_counts(np.arange(out.shape[2]), sw, pad_left, pw, width)
    # outside cells are +0.0: adding it changes no sum (which starts at +0.0, so is never -0.0)
    for lo, hi, cell in _pool_blocks(x, ph, pw, sh, sw, pad_top, pad_left, 0.0, out, row_start, row_stop):
        # each column's cells, then the columns: the order of the kernel's two passes
        total = np.zeros((x.shape[0], x.shape[3], hi - lo, out.shape[2]), np.float32)
        column = np.empty_like(total)
        for b in range(pw):
            column.fill(0.0)
            for a in range(ph):
                column += cell(a, b)
            total += column
        rows = _inside_counts(np.arange(lo, hi), sh, pad_top, ph, height)
        count = (rows[:, None] * cols[None, :]).astype(np.float32)
        out[:, lo:hi] = (total / count).transpose(0, 2, 3, 1)


def _inside_counts(index, stride, pad_before, size, limit):
    start = index * stride - pad_before
    return np.minimum(start + size, limit) - np.maximum(start, 0)


def _winograd_blocks(source, n, block_row, rows, blocks_w, size):
    """The read-only (size, size, rows, blocks_w, C) view of the size x size input blocks of image
    ``n`` whose 2x2 outputs start at block rows ``block_row .. +rows``, 2 pixels apart."""
    _, s_h, s_w, s_c = source.strides
    shape = (size, size, rows, blocks_w, source.shape[3])
    return np.lib.stride_tricks.as_strided(source[n, 2 * block_row :], shape=shape,
                                           strides=(s_h, s_w, 2 * s_h, 2 * s_w, s_c), writeable=False)


@_quiet
def winograd_input(source, n, block_row, rows, blocks_w, v):
    """``winograd_input`` of ``_jit``: the same sums and differences, each over all blocks at once."""
    d = _winograd_blocks(source, n, block_row, rows, blocks_w, 4)
    shape5 = d.shape
    t = np.empty(shape5, np.float32)
    np.subtract(d[0], d[2], out=t[0])
    np.add(d[1], d[2], out=t[1])
    np.subtract(d[2], d[1], out=t[2])
    np.subtract(d[1], d[3], out=t[3])
    v = v[:, : rows * blocks_w].reshape(shape5)  # splits two axes: a view, never a copy
    np.subtract(t[:, 0], t[:, 2], out=v[:, 0])
    np.add(t[:, 1], t[:, 2], out=v[:, 1])
    np.subtract(t[:, 2], t[:, 1], out=v[:, 2])
    np.subtract(t[:, 1], t[:, 3], out=v[:, 3])


@_quiet
def winograd_output(m, bias, add_bias, target, block_row, rows, blocks_w):
    """``winograd_output`` of ``_jit``: the same sums and differences, each over all blocks at once."""
    n_out = target.shape[2]
    count = rows * blocks_w
    m = m[:, :count].reshape(4, 4, count, n_out)
    h = np.empty((2, 4, count, n_out), np.float32)
    np.add(m[0], m[1], out=h[0])
    h[0] += m[2]
    np.subtract(m[1], m[2], out=h[1])
    h[1] -= m[3]
    y = np.empty((2, 2, count, n_out), np.float32)
    np.add(h[:, 0], h[:, 1], out=y[:, 0])
    y[:, 0] += h[:, 2]
    np.subtract(h[:, 1], h[:, 2], out=y[:, 1])
    y[:, 1] -= h[:, 3]
    _store_blocks(y, bias, add_bias, target, block_row, rows, blocks_w)


def _store_blocks(y, bias, add_bias, target, block_row, rows, blocks_w):
    """The (2, 2, blocks, F) outputs ``y`` of block rows ``block_row .. +rows``, plus ``bias`` when
    ``add_bias``, into ``target`` (H, W, F), the cells beyond its bottom or right edge dropped."""
    out_h, out_w, n_out = target.shape
    # (a, b, block row, block column, F) -> output rows 2 * (block_row + r) + a, columns 2 * j + b
    tiles = y.reshape(2, 2, rows, blocks_w, n_out).transpose(2, 0, 3, 1, 4).reshape(2 * rows, 2 * blocks_w, n_out)
    top = 2 * block_row
    kept_rows = min(2 * rows, out_h - top)
    kept = tiles[:kept_rows, :out_w]
    if add_bias:
        np.add(kept, bias, out=target[top : top + kept_rows])
    else:
        target[top : top + kept_rows] = kept


@_quiet
def winograd_filters(w, out, start, stop):
    """``winograd_filters`` of ``_jit``: the same sums, differences and halvings, each over all the
    channels ``start .. stop`` and filters at once."""
    half = np.float32(0.5)
    g = w[:, :, start:stop]  # (u, v, c, f)
    s = g[0] + g[2]
    t = np.empty((4, *s.shape), np.float32)  # G g: (a, v, c, f)
    t[0], t[3] = g[0], g[2]
    np.multiply(s + g[1], half, out=t[1])
    np.multiply(s - g[1], half, out=t[2])
    u = out.reshape(4, 4, *w.shape[2:])[:, :, start:stop]  # (a, b, c, f): a view
    s = t[:, 0] + t[:, 2]
    u[:, 0], u[:, 3] = t[:, 0], t[:, 2]
    np.multiply(s + t[:, 1], half, out=u[:, 1])
    np.multiply(s - t[:, 1], half, out=u[:, 2])


def _winograd5_b(d, u):
    """``B^T`` of F(2x2, 5x5) along the first axis of ``d`` (6, ...) into ``u`` (6, ...), as ``_jit``'s."""
    half, one_half, two, five_halves = np.float32(0.5), np.float32(1.5), np.float32(2.0), np.float32(2.5)
    u[0] = d[0] + one_half * d[1] - two * d[2] - one_half * d[3] + d[4]
    u[1] = d[4] - d[1] - five_halves * d[2] - half * d[3]
    u[2] = d[4] + d[1] + half * d[2] - five_halves * d[3]
    u[3] = d[4] - d[2] + half * (d[3] - d[1])
    u[4] = d[4] - d[2] + two * (d[1] - d[3])
    u[5] = d[5] + d[1] + one_half * d[2] - two * d[3] - one_half * d[4]


@_quiet
def winograd5_input(source, n, block_row, rows, blocks_w, v):
    """``winograd5_input`` of ``_jit``: the same sums and products, each over all blocks at once."""
    d = _winograd_blocks(source, n, block_row, rows, blocks_w, 6)
    shape6 = d.shape
    t = np.empty(shape6, np.float32)
    _winograd5_b(d, t)
    v = v[:, : rows * blocks_w].reshape(shape6)  # splits two axes: a view, never a copy
    _winograd5_b(t.swapaxes(0, 1), v.swapaxes(0, 1))


def _winograd5_a(m, y):
    """``A^T`` of F(2x2, 5x5) along the first axis of ``m`` (6, ...) into ``y`` (2, ...), as ``_jit``'s."""
    half, two = np.float32(0.5), np.float32(2.0)
    y[0] = m[0] + m[1] + m[2] + m[3] + m[4]
    y[1] = m[1] - m[2] + two * m[3] - half * m[4] + m[5]


@_quiet
def winograd5_output(m, bias, add_bias, target, block_row, rows, blocks_w):
    """``winograd5_output`` of ``_jit``: the same sums and products, each over all blocks at once."""
    n_out = target.shape[2]
    count = rows * blocks_w
    h = np.empty((2, 6, count, n_out), np.float32)
    _winograd5_a(m[:, :count].reshape(6, 6, count, n_out), h)
    y = np.empty((2, 2, count, n_out), np.float32)
    _winograd5_a(h.swapaxes(0, 1), y.swapaxes(0, 1))
    _store_blocks(y, bias, add_bias, target, block_row, rows, blocks_w)


def _winograd5_g(g, u):
    """``G`` of F(2x2, 5x5) along the first axis of ``g`` (5, ...) into ``u`` (6, ...), as ``_jit``'s."""
    two, four, eight, sixteen = np.float32(2.0), np.float32(4.0), np.float32(8.0), np.float32(16.0)
    third, fifteenth = np.float32(1.0 / 3.0), np.float32(1.0 / 15.0)
    u[0] = g[0]
    u[1] = (g[0] + g[1] + g[2] + g[3] + g[4]) * -third
    u[2] = (g[0] - g[1] + g[2] - g[3] + g[4]) * third
    u[3] = (g[0] + two * g[1] + four * g[2] + eight * g[3] + sixteen * g[4]) * fifteenth
    u[4] = (sixteen * g[0] - eight * g[1] + four * g[2] - two * g[3] + g[4]) * -fifteenth
    u[5] = g[4]


@_quiet
def winograd5_filters(w, out, start, stop):
    """``winograd5_filters`` of ``_jit``: the same sums and products, each over all the channels
    ``start .. stop`` and filters at once."""
    g = w[:, :, start:stop]  # (u, v, c, f)
    t = np.empty((6, *g.shape[1:]), np.float32)  # G g: (a, v, c, f)
    _winograd5_g(g, t)
    u = out.reshape(6, 6, *w.shape[2:])[:, :, start:stop]  # (a, b, c, f): a view
    _winograd5_g(t.swapaxes(0, 1), u.swapaxes(0, 1))
