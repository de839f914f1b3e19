"""The numpy API, named and behaving like ``tf.nn``.

Arrays are NHWC (``(N, H, W, C)``; a single ``(H, W, C)`` image is accepted
and returned without the batch axis), filters are ``(fh, fw, in, out)``,
and the result is always float32. Every function validates its arguments and
raises ValueError/TypeError with a message that says what to change, then
runs a private kernel: Numba's compiled one or its numpy twin, which gives the
same bits, whichever is faster for the call including Numba's start-up (see
:mod:`convfilter._backend` and :func:`set_backend`).

The formula, as in TensorFlow (cross-correlation; the kernel is not flipped)::

    z[n, i, j, k] = sum_{u, v, c} x[n, i*sh + u*dh - pt, j*sw + v*dw - pl, c] * w[u, v, c, k]

with padding ``pt``/``pl`` from :func:`convfilter.geometry.axis` (TensorFlow's SAME or VALID, or
explicit cells); the padding cells are zeros unless a ``border`` mode fills them (see
:func:`convfilter.borders.pad`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from numpy.typing import ArrayLike

from . import _backend
from ._backend import expect_repeats, get_backend, set_backend
from .borders import fill_border, pad
from .geometry import (AxisGeometry, IntOrPair, Padding, axis, axis_padding, check_border, check_pool_padding,
                       describe_padding, normalize_border, normalize_padding, output_size, pair)
from .system import usable_cpus
from .kernels import OUT_FIRST_HINT, looks_out_first

__all__ = [
    "conv2d",
    "depthwise_conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
    "pad",
    "bias_add",
    "relu",
    "activate",
    "ACTIVATIONS",
    "output_size",
    "set_num_threads",
    "get_num_threads",
    "set_backend",
    "get_backend",
    "expect_repeats",
    "warm_up",
]


def _as_batch(input, name: str = "input", keep_samples: bool = False) -> tuple[np.ndarray, bool]:
    """Return a C-contiguous float32 (N, H, W, C) array and whether a batch axis was added.

    With ``keep_samples``, 8-bit samples keep their type (see ``input_scale``).
    """
    x = np.asarray(input)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x, added = x[np.newaxis], True
    elif x.ndim == 4:
        added = False
    else:
        raise ValueError(f"{name} must be (N, H, W, C) or (H, W, C), got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{name} has an empty axis: shape {x.shape}")
    if keep_samples and x.dtype == np.uint8:  # one compiled signature: other types take the float copy
        return np.ascontiguousarray(x), added
    return np.ascontiguousarray(x, dtype=np.float32), added


def _read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view of ``x``, for a kernel that only reads it: decoded images are read-only,
    arrays from elsewhere may not be, and Numba types the two apart, so the kernels always get
    a read-only view (one compiled signature)."""
    view = x.view()
    view.flags.writeable = False
    return view


def _unbatch(out: np.ndarray, added: bool) -> np.ndarray:
    return out[0] if added else out


def _geometry(x: np.ndarray, window, strides, padding, dilations, what: str):
    """Per-axis geometry, with error messages that name the window kind."""
    wh, ww = window
    height, width = x.shape[1], x.shape[2]
    try:
        return (
            axis(height, wh, strides[0], axis_padding(padding, 0), dilations[0]),
            axis(width, ww, strides[1], axis_padding(padding, 1), dilations[1]),
        )
    except ValueError:
        eff_h, eff_w = (wh - 1) * dilations[0] + 1, (ww - 1) * dilations[1] + 1
        if isinstance(padding, str):
            raise ValueError(
                f"{what} {eff_h}x{eff_w} is larger than the {height}x{width} input with padding=VALID; "
                "use padding SAME or a smaller window"
            ) from None
        (top, bottom), (left, right) = padding
        raise ValueError(
            f"{what} {eff_h}x{eff_w} is larger than the {height}x{width} input padded to "
            f"{height + top + bottom}x{width + left + right} (padding {describe_padding(padding)}); "
            "pad more, use padding SAME or a smaller window"
        ) from None


def conv2d(input: ArrayLike, filters: ArrayLike, strides: IntOrPair = 1, padding: Padding = "SAME",
           dilations: IntOrPair = 1, *, bias: ArrayLike | None = None, activation: str | None = None,
           border: str = "CONSTANT", input_scale: float | None = None) -> np.ndarray:
    """2-D cross-correlation with TensorFlow's semantics (``tf.nn.conv2d``).

    Parameters
    ----------
    input : array_like, (N, H, W, C) or (H, W, C)
    filters : array_like, (fh, fw, C, F)
        TensorFlow's layout. Filters that fit the input both this way and as PyTorch's
        ``(out, in, kh, kw)`` (``(8, 3, 3, 3)`` on RGB) run with a UserWarning; a shape that
        fits only PyTorch's way, or an input that looks channels-first, fails with a hint.
    strides : int or (int, int), default 1
    padding : "SAME", "VALID" (case-insensitive), or explicit cells
        ``SAME`` keeps ``ceil(N / stride)`` outputs, putting the odd padding
        cell at the bottom/right. Explicit padding is TensorFlow's NHWC list
        ``[[0, 0], [top, bottom], [left, right], [0, 0]]`` or the pair of pairs
        ``((top, bottom), (left, right))``.
    dilations : int or (int, int), default 1
    bias : float or array_like (F,), optional, keyword-only
        Added to each output channel, as keras ``Conv2D(use_bias=True)``.
    activation : str, optional, keyword-only
        One of :data:`ACTIVATIONS` (None: ``"none"``), applied after the bias as keras
        ``Conv2D(activation=...)`` does. ``"relu"`` and the bias are applied in the kernel as
        each output row is stored, with the same result as ``relu(bias_add(conv2d(...), bias))``
        but without a second pass over the output; other activations run after the kernel.
    border : {"CONSTANT", "REFLECT", "SYMMETRIC", "EDGE"}, keyword-only, case-insensitive
        The values of the padding cells, as :func:`pad` gives them: zeros (TensorFlow's), or
        mirrored or repeated image cells. The amounts stay those of ``padding``, so
        ``conv2d(x, w, padding=p, border=m)`` equals ``conv2d(pad(x, pads, m), w, padding="VALID")``
        with ``pads`` the cells ``p`` adds. REFLECT needs each padding smaller than the
        image, SYMMETRIC at most the image (``tf.pad``'s limits).
    input_scale : float, optional, keyword-only
        Filter ``input / input_scale`` (e.g. 255 for 8-bit samples), exactly as if that float32
        image were given. Where ``input`` holds 8-bit samples and every input channel has the
        same kernels (a 2-D kernel copied across channels), the samples are read as they are,
        without a float32 copy of the image.

    Returns
    -------
    numpy.ndarray, float32, (N, OH, OW, F) or (OH, OW, F)

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1)
    >>> w = np.ones((2, 2, 1, 1), np.float32)
    >>> conv2d(x, w, padding="VALID")[0, :, :, 0]
    array([[ 8., 12.],
           [20., 24.]], dtype=float32)
    >>> conv2d(x, w, padding=((0, 1), (0, 1)), border="EDGE")[0, :, :, 0]
    array([[ 8., 12., 14.],
           [20., 24., 26.],
           [26., 30., 32.]], dtype=float32)
    """
    _warn_if_out_first(np.shape(input), np.shape(filters))
    return _conv2d(input, filters, strides, padding, dilations, bias=bias, activation=activation, border=border,
                   input_scale=input_scale)


def _warn_if_out_first(input_shape: tuple[int, ...], filters_shape: tuple[int, ...]) -> None:
    """Warn when filters fit the input read as (fh, fw, in, out) but look like PyTorch's layout
    (filters that do not fit fail with a hint instead)."""
    if (len(filters_shape) == 4 and len(input_shape) in (3, 4) and filters_shape[2] == input_shape[-1]
            and looks_out_first(filters_shape, input_shape[-1])):
        fh, fw, _, n_out = filters_shape
        warnings.warn(f"filters of shape {tuple(filters_shape)} are read as (fh, fw, in, out), {n_out} maps of "
                      f"{fh}x{fw} kernels; if they are PyTorch's (out, in, kh, kw), pass "
                      "np.transpose(filters, (2, 3, 1, 0))", UserWarning, stacklevel=3)


def _conv2d(input, filters, strides=1, padding="SAME", dilations=1, *, bias=None, activation=None,
            border="CONSTANT", input_scale=None) -> np.ndarray:
    """:func:`conv2d` without the warning about PyTorch-looking filters, for callers that warn
    about them themselves (the command line, when it reads a kernel file)."""
    x, added = _as_batch(input, keep_samples=input_scale is not None)
    w = np.asarray(filters)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"filters must hold numbers, got dtype {w.dtype}")
    if w.ndim != 4:
        raise ValueError(
            f"filters must be 4-D (fh, fw, in_channels, out_channels), got shape {w.shape}; "
            "for one 2-D kernel k use k[:, :, None, None]"
        )
    if 0 in w.shape:
        raise ValueError(f"filters have an empty axis: shape {w.shape}")
    if w.shape[2] != x.shape[3]:
        raise ValueError(_channel_mismatch(np.shape(input), w.shape))
    if not np.isfinite(w).all():
        raise ValueError("filters contain NaN or infinity; kernel values must be finite")
    strides = pair(strides, "strides")
    dilations = pair(dilations, "dilations")
    padding = normalize_padding(padding)
    border = normalize_border(border)
    bias = None if bias is None else _bias_vector(bias, w.shape[3])
    activation = _activation_name(activation)
    gh, gw = _geometry(x, w.shape[:2], strides, padding, dilations, "kernel")
    check_border(border, gh, "rows")
    check_border(border, gw, "columns")
    w = np.ascontiguousarray(w, np.float32)
    if input_scale is not None:
        if not (np.isfinite(input_scale) and input_scale > 0):
            raise ValueError(f"input_scale must be a positive number, got {input_scale!r}")
        if x.dtype == np.float32 or not sums_input_channels(w):
            x, input_scale = x.astype(np.float32) / np.float32(input_scale), None
    out = _correlate(x, w, strides, dilations, gh, gw, bias=bias, activation=activation,
                     border=border, input_scale=input_scale)
    return _unbatch(out, added)


def _channel_mismatch(input_shape: tuple[int, ...], filters_shape: tuple[int, ...]) -> str:
    """Why filters do not fit the input's channels, with a hint where either looks like the other
    layout (an NCHW input, PyTorch's out-first filters)."""
    fh, fw, n_in, n_out = filters_shape
    channels = input_shape[-1]
    hints = []
    if (len(input_shape) == 4 and input_shape[1] in (n_in, fw) and input_shape[1] != channels
            and input_shape[1] < min(input_shape[2], input_shape[3])):
        hints.append(f"the input {tuple(input_shape)} looks channels-first (N, C, H, W); inputs here are "
                     "(N, H, W, C), as TensorFlow's: np.transpose(input, (0, 2, 3, 1)) converts it")
        channels = input_shape[1]
    if looks_out_first(filters_shape, channels):
        hints.append(f"filters {tuple(filters_shape)}: {OUT_FIRST_HINT}")
    plural = "channel" if n_in == 1 else "channels"
    return (f"filters expect {n_in} input {plural} but the input has {input_shape[-1]}; "
            + "; ".join(hints or [f"use filters of shape ({fh}, {fw}, {channels}, {n_out})"]))


# --- threads ---------------------------------------------------------------------------------
# The kernels release the GIL and work on bands of output rows, so plain threads run them in
# parallel. Work below MIN_PARALLEL_WORK multiply-adds (or cells) stays on the calling thread:
# starting threads costs more than it saves there.

MIN_PARALLEL_WORK = 20_000_000
_threads: int | None = None
_executor = None  # a ThreadPoolExecutor, started on first use
_executor_size = 0


def _forget_executor() -> None:
    """In a forked child the parent's worker threads do not exist: start a fresh pool when needed."""
    global _executor, _executor_size
    _executor, _executor_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def _default_threads() -> int:
    env = os.environ.get("CONVFILTER_NUM_THREADS") or os.environ.get("NUMBA_NUM_THREADS")
    if env and env.strip().isdigit() and int(env) >= 1:
        return int(env)
    return usable_cpus()


def set_num_threads(count: int | None) -> None:
    """Use at most ``count`` threads per call (None: every available CPU).

    Batch workers that already run one process per CPU call
    ``set_num_threads(1)`` so they never oversubscribe. The environment
    variables ``CONVFILTER_NUM_THREADS`` or ``NUMBA_NUM_THREADS`` set the
    default.
    """
    global _threads
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f"thread count must be a whole number >= 1 or None, got {count!r}")
    _threads = count


def get_num_threads() -> int:
    """The number of threads a large call uses."""
    return _threads if _threads is not None else _default_threads()


def _run_bands(name: str, args, rows: int, work: float) -> None:
    """Run kernel ``name`` as ``kernel(*args, row_start, row_stop)`` over ``rows`` output rows, split
    across threads when there is enough ``work``."""
    global _executor, _executor_size
    kernel = _backend.kernel(name, work)
    threads = min(get_num_threads(), rows)
    if threads <= 1 or work < MIN_PARALLEL_WORK:
        kernel(*args, 0, rows)
        return
    if _executor is None or _executor_size < threads:
        from concurrent.futures import ThreadPoolExecutor

        _executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convfilter")
        _executor_size = threads
    edges = [rows * t // threads for t in range(threads + 1)]
    futures = [_executor.submit(kernel, *args, lo, hi) for lo, hi in zip(edges, edges[1:]) if hi > lo]
    for future in futures:
        future.result()


def warm_up() -> dict[str, str]:
    """Load or compile every Numba kernel by calling each once on tiny arrays.

    For a process that will serve many calls (a server, a batch): afterwards
    every call can use the compiled kernels at no start-up cost. Returns
    ``{kernel name: "compiled" or "cached"}`` so that a caller can report which
    kernels were compiled in this call (and so are now in the on-disk cache).
    """
    x = np.ones((1, 3, 3, 2), np.float32)
    dense = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1)
    previous = get_backend()
    set_backend("numba")
    try:
        _correlate_same(x, dense, path="planar")
        _correlate_same(x, np.ones((2, 2, 2, 1), np.float32), path="separable")  # channel sum as well
        conv2d(np.ones((1, 3, 3, 3), np.uint8), np.ones((2, 2, 3, 1), np.float32), input_scale=255)  # 8-bit RGB
        max_pool2d(x, 2)
        avg_pool2d(x, 2)
    finally:
        set_backend(previous)
    from . import _jit

    report = {}
    for name in _jit.KERNELS:
        kernel = getattr(_jit, name)
        report[name] = "compiled" if sum(kernel.stats.cache_misses.values()) else "cached"
    return report


def _correlate_same(x, w, path):
    gh = axis(x.shape[1], w.shape[0], 1, "SAME", 1)
    gw = axis(x.shape[2], w.shape[1], 1, "SAME", 1)
    return _correlate(x, w, (1, 1), (1, 1), gh, gw, path=path)


# --- convolution paths -----------------------------------------------------------------------

# A channels-last loop order (innermost loop over the filters) measured slower than the planar
# one even with 32 filters, so there are two paths: direct and separable.
CONV_PATHS = ("auto", "planar", "separable")


def _rank_one(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
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


def _separable_factors(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row factors (F, C, kh) and (F, C, kw) when every w[:, :, c, f] is rank 1."""
    fh, fw, n_in, n_out = w.shape
    cols = np.empty((n_out, n_in, fh), np.float32)
    rows = np.empty((n_out, n_in, fw), np.float32)
    for f in range(n_out):
        for c in range(n_in):
            factors = _rank_one(w[:, :, c, f])
            if factors is None:
                return None
            cols[f, c], rows[f, c] = factors
    return cols, rows


def sums_input_channels(w: np.ndarray) -> bool:
    """True when every input channel of the (fh, fw, in, out) bank ``w`` has the same kernels, so
    :func:`conv2d` filters the sum of the channels once (and reads ``input_scale`` samples as they are)."""
    return w.shape[2] > 1 and bool(np.all(w == w[:, :, :1, :]))


def _correlate(x, w, strides, dilations, gh: AxisGeometry, gw: AxisGeometry, path: str = "auto",
               sum_channels: bool | None = None, bias: np.ndarray | None = None,
               activation: str = "none", border: str = "CONSTANT",
               input_scale: float | None = None) -> np.ndarray:
    """NHWC float32 result of the cross-correlation, by the fastest exact path (or the one forced).

    ``sum_channels`` (None: when it applies) filters the sum of the input channels once with
    one channel's kernels. ``path`` is one of :data:`CONV_PATHS`. ``bias`` (float32, one per
    filter, or None) and a ReLU ``activation`` are applied by the kernel as it stores each
    row; any other activation runs on the result afterwards. ``border`` (a checked mode of
    :func:`pad`) fills the padded copy's border after the image is copied in: every path reads
    the same padded copy, so each border keeps its fast path.
    """
    if sum_channels is None:
        sum_channels = sums_input_channels(w)
    elif sum_channels and not (w.shape[2] == 1 or np.all(w == w[:, :, :1, :])):
        raise ValueError("sum_channels needs the same kernels on every input channel")
    if sum_channels:
        w = np.ascontiguousarray(w[:, :, :1, :])
    factors = _separable_factors(w) if path in ("auto", "separable") else None
    if path == "separable" and factors is None:
        raise ValueError("the separable path needs rank-1 kernels")
    if path == "auto":
        path = "separable" if factors is not None else "planar"

    n_img, height, width, channels = x.shape
    n_in = w.shape[2]
    padded_h = height + gh.pad_before + gh.pad_after
    padded_w = width + gw.pad_before + gw.pad_after
    if path == "separable" and channels == 1 and x.flags.writeable and border == "CONSTANT":
        # one channel: the separable kernel reads the image itself and pads with zeros as it
        # goes (a read-only array would be another type for Numba: those go through the padded
        # copy, as do other borders, whose cells are not zeros)
        source, pads = x.reshape(n_img, height, width), (gh.pad_before, gw.pad_before)
    else:
        padded = np.empty((n_img, n_in, padded_h, padded_w), np.float32)
        if input_scale is not None:  # integer samples, several channels with the same kernels
            values = np.arange(256, dtype=np.float32) / np.float32(input_scale)  # what a float image holds
            _backend.kernel("pad_planar_channel_sum_scaled", padded.size)(_read_only(x), values, gh.pad_before,
                                                                           gw.pad_before, padded)
        else:
            padder = "pad_planar_channel_sum" if sum_channels else "pad_planar"
            _backend.kernel(padder, padded.size)(_read_only(x), gh.pad_before, gw.pad_before, padded)
        fill_border(padded, gh.pad_before, gw.pad_before, height, width, border)
        source, pads = padded.reshape(n_img, n_in * padded_h, padded_w), (0, 0)
    out = np.empty((n_img, gh.out, gw.out, w.shape[3]), np.float32)
    # the kernels always get the same argument types (one compiled signature): a float32 bias
    # vector, unused when add_bias is False, and two bools
    add_bias = bias is not None
    finish = (np.zeros(w.shape[3], np.float32) if bias is None else bias, add_bias, activation == "relu")
    if path == "separable":
        _correlate_separable(source, pads, padded_h, padded_w, factors, strides, dilations, finish, out)
    else:
        _correlate_direct(padded, w, strides, dilations, finish, out)
    if activation not in ("none", "relu"):
        out = activate(out, activation)
    return out


def _correlate_direct(padded, w, strides, dilations, finish, out) -> None:
    """The direct path: one tap list for all filters (the positions where any filter is nonzero),
    so that filters share the loads of their source rows."""
    n_img, n_in, padded_h, padded_w = padded.shape
    fh, fw, _, n_out = w.shape
    (sh, sw), (dh, dw) = strides, dilations
    c, u, v = np.meshgrid(np.arange(n_in), np.arange(fh), np.arange(fw), indexing="ij")
    positions = np.stack([(c * padded_h + u * dh).ravel(), (v * dw).ravel()], 1)
    per_filter = w.transpose(3, 2, 0, 1).reshape(n_out, n_in * fh * fw)
    used = np.flatnonzero(np.any(per_filter != 0, axis=0))
    count = _padded_count(len(used))
    taps = np.zeros((count, 2), np.int64)
    taps[: len(used)] = positions[used]
    weights = np.zeros((n_out, count), np.float32)
    weights[:, : len(used)] = per_filter[:, used]
    rows_view = padded.reshape(n_img, n_in * padded_h, padded_w)
    _run_bands("correlate_planar", (rows_view, taps, weights, sh, sw, *finish, out), out.shape[1],
               out.size * count)


def _correlate_separable(source, pads, padded_h, padded_w, factors, strides, dilations, finish, out) -> None:
    """The separable path: column taps down the rows of each channel of ``source`` (the padded
    planar input viewed as (N, C*Hp, Wp) with ``pads`` (0, 0), or a one-channel image (N, H, W)
    with its top and left padding), row taps along the scratch row they produce."""
    cols, rows = factors
    n_in = cols.shape[1]
    (sh, sw), (dh, dw) = strides, dilations
    col_taps, col_weights = _tap_lists(cols, dh, padded_h, vertical=True)
    row_taps, row_weights = _tap_lists(rows, dw, padded_h, vertical=False)
    # four output rows per column pass when their taps overlap (stride 1), else two
    group_taps, group_weights = _row_group_taps(cols, 4 if sh == 1 else 2, sh, dh, padded_h)
    args = (source, *pads, col_taps, col_weights, group_taps, group_weights, row_taps, row_weights, sh, sw,
            padded_w, *finish, out)
    n_img, out_h, out_w, n_out = out.shape
    work = n_img * out_h * n_out * n_in * (col_taps.shape[2] * padded_w + row_taps.shape[2] * out_w)
    _run_bands("correlate_separable", args, out_h, work)


def _padded_count(taps: int) -> int:
    """Tap lists are padded with zero-weight taps to a multiple of four (at least four)."""
    return max(4, -(-taps // 4) * 4)


def _row_group_taps(cols: np.ndarray, group: int, sh: int, dh: int,
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
    count = _padded_count(max(len(t) for t in tables.values()))
    taps = np.zeros((n_out, n_in, count, 2), np.int64)
    weights = np.zeros((n_out, n_in, group, count), np.float32)
    for (f, c), table in tables.items():
        for t, (offset, per_row) in enumerate(table):
            taps[f, c, t, 0] = c * padded_h + offset
            weights[f, c, :, t] = per_row
    return taps, weights


def _tap_lists(kernels: np.ndarray, spacing: int, padded_h: int, vertical: bool):
    """The nonzero taps of each 1-D kernel ``kernels[f, c]`` as (F, C, T, 2) (row, column)
    positions and (F, C, T) weights; zero-weight padding at (0, 0).

    Vertical taps walk down the rows of channel ``c`` (row ``c*padded_h + index*spacing``),
    horizontal ones along a row (column ``index*spacing``). Zero weights are left out: exact,
    they add nothing.
    """
    n_out, n_in, _ = kernels.shape
    count = _padded_count(max(np.count_nonzero(kernels[f, c]) for f in range(n_out) for c in range(n_in)))
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


def _pool(kernel: str, input, ksize, strides, padding) -> np.ndarray:
    x, added = _as_batch(input)
    ksize = pair(ksize, "ksize")
    strides = ksize if strides is None else pair(strides, "strides")
    padding = normalize_padding(padding)
    check_pool_padding("avg" if kernel == "avg_pool" else "max", padding, ksize)
    gh, gw = _geometry(x, ksize, strides, padding, (1, 1), "pool window")
    out = np.empty((x.shape[0], gh.out, gw.out, x.shape[3]), np.float32)
    args = (_read_only(x), ksize[0], ksize[1], strides[0], strides[1], gh.pad_before, gw.pad_before, out)
    _run_bands(kernel, args, gh.out, out.size * ksize[0] * ksize[1])
    return _unbatch(out, added)


def max_pool2d(input: ArrayLike, ksize: IntOrPair, strides: IntOrPair | None = None,
               padding: Padding = "VALID") -> np.ndarray:
    """Max pooling (``tf.nn.max_pool2d``, keras ``MaxPool2D``).

    Parameters
    ----------
    input : array_like, (N, H, W, C) or (H, W, C)
    ksize : int or (int, int)
    strides : int or (int, int), optional
        Defaults to ``ksize`` as in keras.
    padding : "VALID", "SAME" or explicit cells
        Cells outside the image never win (they are not zeros). Explicit
        padding is TensorFlow's ``[[0, 0], [top, bottom], [left, right], [0, 0]]``
        or ``((top, bottom), (left, right))``, each smaller than the window (as
        ``tf.nn.max_pool2d`` requires).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    >>> max_pool2d(x, 2)[:, :, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    return _pool("max_pool", input, ksize, strides, padding)


def avg_pool2d(input: ArrayLike, ksize: IntOrPair, strides: IntOrPair | None = None,
               padding: Padding = "VALID") -> np.ndarray:
    """Average pooling (``tf.nn.avg_pool2d``, keras ``AvgPool2D``).

    With ``SAME`` padding each window is divided by the number of its cells
    that lie inside the image, as TensorFlow does. Explicit padding is refused,
    as ``tf.nn.avg_pool2d`` refuses it (ValueError): pad with :func:`pad` and
    pool with ``VALID`` to average with the padding cells counted.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    >>> avg_pool2d(x, 2, padding="SAME")[:, :, 0]
    array([[2. , 3.5],
           [6.5, 8. ]], dtype=float32)
    """
    return _pool("avg_pool", input, ksize, strides, padding)


def global_avg_pool2d(input: ArrayLike, keepdims: bool = False) -> np.ndarray:
    """Mean over height and width (keras ``GlobalAvgPool2D``), accumulated in float64.

    Returns (N, C), or (N, 1, 1, C) with ``keepdims=True``; an (H, W, C) input
    gives (C,) or (1, 1, C).
    """
    x, added = _as_batch(input)
    out = x.mean(axis=(1, 2), dtype=np.float64, keepdims=keepdims).astype(np.float32)
    return _unbatch(out, added)


def global_max_pool2d(input: ArrayLike, keepdims: bool = False) -> np.ndarray:
    """Maximum over height and width (keras ``GlobalMaxPool2D``)."""
    x, added = _as_batch(input)
    return _unbatch(x.max(axis=(1, 2), keepdims=keepdims), added)


def _bias_vector(bias, channels: int) -> np.ndarray:
    """``bias`` as float32 (channels,), checked: a number or one finite value per channel."""
    vector = np.asarray(bias, dtype=np.float32)
    if vector.ndim > 1 or (vector.ndim == 1 and vector.shape[0] not in (1, channels)):
        raise ValueError(
            f"bias must be a number or have one value per channel ({channels}), got shape {vector.shape}"
        )
    if not np.isfinite(vector).all():
        raise ValueError("bias must be finite")
    return np.array(np.broadcast_to(vector, (channels,)))  # a writable copy: the kernels' one signature


def bias_add(value: ArrayLike, bias: ArrayLike) -> np.ndarray:
    """Add a per-channel bias along the last axis (``tf.nn.bias_add``)."""
    value = np.asarray(value, dtype=np.float32)
    return value + _bias_vector(bias, value.shape[-1])


def relu(features: ArrayLike) -> np.ndarray:
    """``max(x, 0)`` (``tf.nn.relu``)."""
    return np.maximum(np.asarray(features, dtype=np.float32), np.float32(0))


def _sigmoid(x):
    return (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(np.float32)


ACTIVATIONS = {
    "none": lambda x: x,
    "relu": relu,
    "abs": np.abs,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
}


def _activation_name(name) -> str:
    """The key of :data:`ACTIVATIONS` for ``name`` (case-insensitive; None is "none")."""
    key = "none" if name is None else str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return key


def activate(features: ArrayLike, name: str | None = "none") -> np.ndarray:
    """Apply the activation called ``name`` (one of :data:`ACTIVATIONS`)."""
    return np.asarray(ACTIVATIONS[_activation_name(name)](np.asarray(features, dtype=np.float32)),
                      dtype=np.float32)


def depthwise_conv2d(input: ArrayLike, filter: ArrayLike, strides: IntOrPair = 1, padding: str = "SAME",
                     dilations: IntOrPair = 1) -> np.ndarray:
    """Each input channel correlated with its own filters (``tf.nn.depthwise_conv2d``, keras
    ``DepthwiseConv2D``).

    Parameters
    ----------
    input : array_like, (N, H, W, C) or (H, W, C)
    filter : array_like, (fh, fw, C, M)
        ``M`` filters per input channel (keras' ``depth_multiplier``); output channel
        ``c * M + m`` is input channel ``c`` correlated with ``filter[:, :, c, m]``.
    strides, padding, dilations
        As in :func:`conv2d`.

    Returns
    -------
    numpy.ndarray, float32, (N, OH, OW, C*M) or (OH, OW, C*M)

    Examples
    --------
    >>> import numpy as np
    >>> x = np.stack([np.ones((3, 3)), np.arange(9.0).reshape(3, 3)], axis=-1)
    >>> w = np.ones((2, 2, 2, 1), np.float32)
    >>> depthwise_conv2d(x, w, padding="VALID")[:, :, 1]
    array([[ 8., 12.],
           [20., 24.]], dtype=float32)
    """
    x, added = _as_batch(input)
    w = np.asarray(filter)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"filter must hold numbers, got dtype {w.dtype}")
    if w.ndim != 4 or 0 in w.shape:
        raise ValueError(f"filter must be 4-D (fh, fw, in_channels, channel_multiplier), got shape {w.shape}")
    if w.shape[2] != x.shape[3]:
        raise ValueError(f"filter expects {w.shape[2]} input channels but the input has {x.shape[3]}")
    if not np.isfinite(w).all():
        raise ValueError("filter contains NaN or infinity; kernel values must be finite")
    w = np.ascontiguousarray(w, np.float32)
    (sh, sw), (dh, dw) = pair(strides, "strides"), pair(dilations, "dilations")
    gh, gw = _geometry(x, w.shape[:2], (sh, sw), normalize_padding(padding), (dh, dw), "kernel")
    n_img, _, _, channels = x.shape
    multiplier = w.shape[3]
    padded = np.pad(x, ((0, 0), (gh.pad_before, gh.pad_after), (gw.pad_before, gw.pad_after), (0, 0)))
    # one vectorised multiply-add per tap over the whole batch: the channel axis stays innermost
    out = np.zeros((n_img, gh.out, gw.out, channels, multiplier), np.float32)
    product = np.empty_like(out)
    for u in range(w.shape[0]):
        for v in range(w.shape[1]):
            window = padded[:, u * dh: u * dh + (gh.out - 1) * sh + 1: sh,
                            v * dw: v * dw + (gw.out - 1) * sw + 1: sw, :, np.newaxis]
            np.multiply(window, w[u, v], out=product)
            out += product
    return _unbatch(out.reshape(n_img, gh.out, gw.out, channels * multiplier), added)
