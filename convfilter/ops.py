"""The numpy API, named and behaving like ``tf.nn``.

Arrays are NHWC (``(N, H, W, C)``; a single ``(H, W, C)`` image is accepted
and returned without the batch axis), filters are ``(fh, fw, in, out)``,
and the result is always float32. Every function validates its arguments and
raises ValueError/TypeError with a message that says what to change, then
computes the result by one of the exact paths of :mod:`convfilter.conv_paths`
(private kernels, or numpy's BLAS for many channels) on the threads of
:mod:`convfilter.threads`. Each kernel runs as Numba's compiled loop or its numpy
twin, which gives the same bits, whichever is faster for the call including
Numba's start-up (see :mod:`convfilter._backend` and :func:`set_backend`).

The formula, as in TensorFlow (cross-correlation; the kernel is not flipped)::

    z[n, i, j, k] = sum_{u, v, c} x[n, i*sh + u*dh - pt, j*sw + v*dw - pl, c] * w[u, v, c, k]

with padding ``pt``/``pl`` from :func:`convfilter.geometry.axis` (TensorFlow's SAME or VALID, or
explicit cells); the padding cells are zeros unless a ``border`` mode fills them (see
:func:`convfilter.borders.pad`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from ._backend import expect_repeats, get_backend, set_backend
from ._backend import kernel as kernel_for
from .activations import IN_PLACE, apply_in_place
from .activations import activation_name as _activation_name
from .borders import pad
from .conv_paths import CONV_PATHS, correlate, finish_of, read_only, sums_input_channels
from .geometry import (IntOrPair, Padding, axis, axis_padding, check_border, check_pool_padding, describe_padding,
                       normalize_border, normalize_padding, output_size, pair)
from .kernels import OUT_FIRST_HINT, looks_out_first
from .threads import get_num_threads, run_bands, set_num_threads

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
    "CONV_PATHS",
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


def _unbatch(out: np.ndarray, added: bool) -> np.ndarray:
    return out[0] if added else out


def _geometry(x: np.ndarray, window, strides, padding, dilations, what: str):
    """Per-axis geometry, with error messages that name the window kind."""
    wh, ww = window
    height, width = x.shape[1], x.shape[2]
    try:
        return _axes(height, width, wh, ww, strides, padding, dilations)
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


@functools.lru_cache(maxsize=1024)
def _axes(height: int, width: int, wh: int, ww: int, strides, padding, dilations):
    """The two axes' geometries, worked out once per shape (a layer called in a loop)."""
    return (axis(height, wh, strides[0], axis_padding(padding, 0), dilations[0]),
            axis(width, ww, strides[1], axis_padding(padding, 1), dilations[1]))


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
        ``Conv2D(activation=...)`` does, with the same result as
        ``activate(bias_add(conv2d(...), bias), activation)`` but without another full-size
        array: the bias and the activation are applied as each output row or tile is stored
        (ReLU in the kernels), or in place on the result.
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
            border="CONSTANT", input_scale=None, filters_finite=False) -> np.ndarray:
    """:func:`conv2d` without the warning about PyTorch-looking filters, for callers that warn
    about them themselves (the command line, when it reads a kernel file) or whose filters are
    in TensorFlow's layout by construction (a Keras model's). ``filters_finite``: the caller
    knows the float32 filters hold no NaN or infinity (a call with them returned), so they are
    not checked again."""
    x, added = _as_batch(input, keep_samples=input_scale is not None)
    w, check_bank = _filters(filters, x.shape[3], "filters", "out_channels",
                             mismatch=lambda shape: _channel_mismatch(np.shape(input), shape), late_check=True)
    strides = pair(strides, "strides")
    dilations = pair(dilations, "dilations")
    padding = normalize_padding(padding)
    border = normalize_border(border)
    bias = None if bias is None else _bias_vector(bias, w.shape[3])
    activation = _activation_name(activation)
    gh, gw = _geometry(x, w.shape[:2], strides, padding, dilations, "kernel")
    check_border(border, gh, "rows")
    check_border(border, gw, "columns")
    if input_scale is not None:
        if not (np.isfinite(input_scale) and input_scale > 0):
            raise ValueError(f"input_scale must be a positive number, got {input_scale!r}")
        if x.dtype == np.float32 or not sums_input_channels(w):
            x, input_scale = x.astype(np.float32) / np.float32(input_scale), None
    out = correlate(x, w, strides, dilations, gh, gw, bias=bias, activation=activation, border=border,
                    input_scale=input_scale, check_bank=None if filters_finite else check_bank)
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


def _filters(filters, channels: int, name: str, last_axis: str, mismatch=None, late_check: bool = False):
    """``filters`` as C-contiguous float32 (fh, fw, channels, K), checked; ``name`` is the
    parameter ("filters" or "filter"), ``last_axis`` the name of K, and ``mismatch(shape)``
    (optional) the message when the input channels differ. With ``late_check``, ``(filters,
    check)``: the check for NaN and infinity not made yet but returned, for ``correlate``'s
    ``check_bank``."""
    plural = name.endswith("s")
    have, contain, expect = ("have", "contain", "expect") if plural else ("has", "contains", "expects")
    w = np.asarray(filters)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {w.dtype}")
    if w.ndim != 4:
        raise ValueError(
            f"{name} must be 4-D (fh, fw, in_channels, {last_axis}), got shape {w.shape}; "
            "for one 2-D kernel k use k[:, :, None, None]"
        )
    if 0 in w.shape:
        raise ValueError(f"{name} {have} an empty axis: shape {w.shape}")
    if w.shape[2] != channels and mismatch is not None:
        raise ValueError(mismatch(w.shape))
    if w.shape[2] != channels:
        raise ValueError(
            f"{name} {expect} {w.shape[2]} input channels but the input has {channels}; "
            f"use {name} of shape ({w.shape[0]}, {w.shape[1]}, {channels}, {w.shape[3]})"
        )
    given = w.dtype
    if given != np.float32 or not w.flags.c_contiguous:
        with np.errstate(over="ignore"):  # a float64 weight beyond float32's range: an infinity, refused below
            w = np.ascontiguousarray(w, np.float32)
    def check() -> None:
        # the float32 sum of squares is finite when every weight is: one pass with no temporary,
        # by BLAS (a deep bank is megabytes: 3x3x512x512 0.15 ms, a third of numpy's pairwise
        # sum); only when it overflows or is NaN are the weights checked one by one
        flat = w.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.dot(flat, flat)
        if not math.isfinite(total) and not np.isfinite(w).all():
            converted = "" if given == np.float32 else " in float32"
            raise ValueError(f"{name} {contain} NaN or infinity{converted}; kernel values must be finite")

    if late_check:
        return w, check
    check()
    return w


DEPTHWISE_WORK_SCALE = 4


def depthwise_conv2d(input: ArrayLike, filter: ArrayLike, strides: IntOrPair = 1, padding: Padding = "SAME",
                     dilations: IntOrPair = 1, *, bias: ArrayLike | None = None,
                     activation: str | None = None) -> np.ndarray:
    """Depthwise 2-D cross-correlation (``tf.nn.depthwise_conv2d``, keras ``DepthwiseConv2D``).

    Each input channel ``c`` is filtered on its own by its ``M`` kernels
    ``filter[:, :, c, m]``; output channel ``c*M + m`` holds the result::

        z[n, i, j, c*M + m] = sum_{u, v} x[n, i*sh + u*dh - pt, j*sw + v*dw - pl, c] * w[u, v, c, m]

    Parameters
    ----------
    input : array_like, (N, H, W, C) or (H, W, C)
    filter : array_like, (fh, fw, C, M)
        ``M`` is the channel multiplier (keras ``depth_multiplier``).
    strides, padding, dilations, bias, activation
        As in :func:`conv2d`; ``bias`` has one value per output channel (``C*M``).

    Returns
    -------
    numpy.ndarray, float32, (N, OH, OW, C*M) or (OH, OW, C*M)

    Examples
    --------
    >>> import numpy as np
    >>> x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))], -1)  # two channels, 1 and 2
    >>> depthwise_conv2d(x, np.ones((3, 3, 2, 1)), padding="VALID")[0, 0]
    array([ 9., 18.], dtype=float32)
    """
    x, added = _as_batch(input)
    w = _filters(filter, x.shape[3], "filter", "channel_multiplier")
    strides, dilations, padding = pair(strides, "strides"), pair(dilations, "dilations"), normalize_padding(padding)
    n_out = w.shape[2] * w.shape[3]
    bias = None if bias is None else _bias_vector(bias, n_out)
    activation = _activation_name(activation)
    gh, gw = _geometry(x, w.shape[:2], strides, padding, dilations, "kernel")
    out = np.empty((x.shape[0], gh.out, gw.out, n_out), np.float32)
    relu = activation == "relu"
    args = (read_only(x), w, *strides, *dilations, gh.pad_before, gw.pad_before, *finish_of(bias, n_out, relu), out)
    work = out.size * w.shape[0] * w.shape[1]
    # its loops take several times longer per multiply-add than the direct loops', for which the
    # thread threshold is set: they count as that much more work there (112x112x64 * 3x3, 7.2
    # million: 0.81 ms on one thread, 0.68 ms on two; 56x56x128, 3.6 million, gained nothing
    # from a second thread at twice this scale)
    run_bands(kernel_for("correlate_depthwise", work), args, gh.out, work * DEPTHWISE_WORK_SCALE)
    if not relu:
        apply_in_place(out, activation)
    return _unbatch(out, added)


def warm_up(between: Callable[[], None] | None = None) -> dict[str, str]:
    """Load or compile every Numba kernel by calling each once on tiny arrays.

    For a process that will serve many calls (a server, a batch): afterwards
    every call can use the compiled kernels at no start-up cost. Returns
    ``{kernel name: "compiled" or "cached"}`` so that a caller can report which
    kernels were compiled in this call (and so are now in the on-disk cache).
    ``between`` is called after each of the calls (a server checks there whether
    it was stopped).
    """
    x = np.ones((1, 3, 3, 2), np.float32)
    dense = np.arange(8, dtype=np.float32).reshape(2, 2, 2, 1)
    calls = [
        lambda: _correlate_same(x, dense, path="planar"),
        lambda: _correlate_same(x, dense, path="planar", stride=2),  # the copy's columns dealt into two phases
        lambda: conv2d(x[..., :1], np.ones((1, 1, 1, 2), np.float32)),  # a 1x1 kernel on one channel: a scaling
        lambda: _correlate_same(x, np.ones((2, 2, 2, 1), np.float32), path="separable"),  # channel sum as well
        lambda: _correlate_same(x, np.ones((3, 3, 2, 1), np.float32), path="winograd"),
        lambda: _correlate_same(x, np.ones((5, 5, 2, 1), np.float32), path="winograd"),  # F(2x2, 5x5)
        lambda: _correlate_same(np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 4), np.float32), path="blocked"),
        # a matrix product's tiles finished with a bias and the ReLU
        lambda: _correlate_same(x, np.ones((1, 1, 2, 2), np.float32), path="matmul", bias=np.zeros(2, np.float32),
                                activation="relu"),
        lambda: conv2d(np.ones((1, 3, 3, 3), np.uint8), np.ones((2, 2, 3, 1), np.float32), input_scale=255),  # 8-bit
        lambda: depthwise_conv2d(x, dense.reshape(2, 2, 2, 1)),
        lambda: max_pool2d(x, 2),
        lambda: avg_pool2d(x, 2),
    ]
    previous = get_backend()
    set_backend("numba")
    try:
        for call in calls:
            call()
            if between is not None:
                between()
    finally:
        set_backend(previous)
    from . import _jit

    report = {}
    for name in _jit.KERNELS:
        kernel = getattr(_jit, name)
        report[name] = "compiled" if sum(kernel.stats.cache_misses.values()) else "cached"
    return report


def _correlate_same(x, w, path, stride=1, **finish):
    gh = axis(x.shape[1], w.shape[0], stride, "SAME", 1)
    gw = axis(x.shape[2], w.shape[1], stride, "SAME", 1)
    return correlate(x, w, (stride, stride), (1, 1), gh, gw, path=path, **finish)


def _pool(kernel: str, input, ksize, strides, padding) -> np.ndarray:
    x, added = _as_batch(input)
    ksize = pair(ksize, "ksize")
    strides = ksize if strides is None else pair(strides, "strides")
    padding = normalize_padding(padding)
    check_pool_padding("avg" if kernel == "avg_pool" else "max", padding, ksize)
    gh, gw = _geometry(x, ksize, strides, padding, (1, 1), "pool window")
    out = np.empty((x.shape[0], gh.out, gw.out, x.shape[3]), np.float32)
    args = (read_only(x), *ksize, *strides, gh.pad_before, gw.pad_before, out)
    run_bands(kernel, args, gh.out, out.size * ksize[0] * ksize[1])
    return _unbatch(out, added)


def max_pool2d(input: ArrayLike, ksize: IntOrPair, strides: IntOrPair | None = None,
               padding: Padding = "VALID") -> np.ndarray:
    """Max pooling (``tf.nn.max_pool2d``, keras ``MaxPool2D``).

    As in TensorFlow, NaN cells are ignored: a window's max is that of its
    other cells, and NaN only for a window of NaNs.

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
    return activate(features, "relu")


def activate(features: ArrayLike, name: str | None = "none") -> np.ndarray:
    """Apply the activation called ``name`` (one of :data:`ACTIVATIONS`) to a float32 copy."""
    out = np.array(features, dtype=np.float32)
    apply_in_place(out, _activation_name(name))
    return out


# name -> a function returning a new float32 array (the in-place table is activations.IN_PLACE)
ACTIVATIONS = {name: functools.partial(activate, name=name) for name in IN_PLACE}
