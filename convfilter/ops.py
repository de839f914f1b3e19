"""The numpy API, named and behaving like ``tf.nn``.

Arrays are NHWC (``(N, H, W, C)``; a single ``(H, W, C)`` image is accepted
and returned without the batch axis), filters are ``(fh, fw, in, out)``,
and the result is always float32. Every function validates its arguments and
raises ValueError/TypeError with a message that says what to change, then
runs a private Numba kernel.

The formula, as in TensorFlow (cross-correlation; the kernel is not flipped)::

    z[n, i, j, k] = sum_{u, v, c} x[n, i*sh + u*dh - pt, j*sw + v*dw - pl, c] * w[u, v, c, k]

with zero padding ``pt``/``pl`` from :func:`convfilter.geometry.axis`.
"""

from __future__ import annotations

import numpy as np

from . import _jit
from .geometry import AxisGeometry, axis, normalize_padding, output_size, pair

__all__ = [
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
    "global_max_pool2d",
    "bias_add",
    "relu",
    "activate",
    "ACTIVATIONS",
    "output_size",
]


def _as_batch(input, name: str = "input") -> tuple[np.ndarray, bool]:
    """Return a C-contiguous float32 (N, H, W, C) array and whether a batch axis was added."""
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
    return np.ascontiguousarray(x, dtype=np.float32), added


def _unbatch(out: np.ndarray, added: bool) -> np.ndarray:
    return out[0] if added else out


def _geometry(x: np.ndarray, window, strides, padding, dilations, what: str):
    """Per-axis geometry, with error messages that name the window kind."""
    wh, ww = window
    height, width = x.shape[1], x.shape[2]
    try:
        return (
            axis(height, wh, strides[0], padding, dilations[0]),
            axis(width, ww, strides[1], padding, dilations[1]),
        )
    except ValueError:
        eff_h, eff_w = (wh - 1) * dilations[0] + 1, (ww - 1) * dilations[1] + 1
        raise ValueError(
            f"{what} {eff_h}x{eff_w} is larger than the {height}x{width} input with padding=VALID; "
            "use padding SAME or a smaller window"
        ) from None


def conv2d(input, filters, strides=1, padding="SAME", dilations=1) -> np.ndarray:
    """2-D cross-correlation with TensorFlow's semantics (``tf.nn.conv2d``).

    Parameters
    ----------
    input : array_like, (N, H, W, C) or (H, W, C)
    filters : array_like, (fh, fw, C, F)
    strides : int or (int, int), default 1
    padding : {"SAME", "VALID"}, case-insensitive
        ``SAME`` keeps ``ceil(N / stride)`` outputs, padding with zeros and
        putting the odd padding cell at the bottom/right.
    dilations : int or (int, int), default 1

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
    """
    x, added = _as_batch(input)
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
        raise ValueError(
            f"filters expect {w.shape[2]} input channels but the input has {x.shape[3]}; "
            f"use filters of shape ({w.shape[0]}, {w.shape[1]}, {x.shape[3]}, {w.shape[3]})"
        )
    if not np.isfinite(w).all():
        raise ValueError("filters contain NaN or infinity; kernel values must be finite")
    strides = pair(strides, "strides")
    dilations = pair(dilations, "dilations")
    padding = normalize_padding(padding)
    gh, gw = _geometry(x, w.shape[:2], strides, padding, dilations, "kernel")
    return _unbatch(_correlate(x, np.asarray(w, np.float32), strides, dilations, gh, gw), added)


def _correlate(x, w, strides, dilations, gh: AxisGeometry, gw: AxisGeometry) -> np.ndarray:
    n_img, height, width, channels = x.shape
    padded = np.empty(
        (n_img, channels, height + gh.pad_before + gh.pad_after, width + gw.pad_before + gw.pad_after),
        np.float32,
    )
    _jit.pad_planar(x, gh.pad_before, gw.pad_before, padded)
    weights = np.ascontiguousarray(w.transpose(3, 2, 0, 1), dtype=np.float32)
    planar = np.empty((n_img, w.shape[3], gh.out, gw.out), np.float32)
    _jit.correlate_planar(padded, weights, strides[0], strides[1], dilations[0], dilations[1], planar)
    out = np.empty((n_img, gh.out, gw.out, w.shape[3]), np.float32)
    _jit.planar_to_nhwc(planar, out)
    return out


def _pool(kernel, input, ksize, strides, padding) -> np.ndarray:
    x, added = _as_batch(input)
    ksize = pair(ksize, "ksize")
    strides = ksize if strides is None else pair(strides, "strides")
    padding = normalize_padding(padding)
    gh, gw = _geometry(x, ksize, strides, padding, (1, 1), "pool window")
    out = np.empty((x.shape[0], gh.out, gw.out, x.shape[3]), np.float32)
    kernel(x, ksize[0], ksize[1], strides[0], strides[1], gh.pad_before, gw.pad_before, out)
    return _unbatch(out, added)


def max_pool2d(input, ksize, strides=None, padding="VALID") -> np.ndarray:
    """Max pooling (``tf.nn.max_pool2d``, keras ``MaxPool2D``).

    Parameters
    ----------
    input : array_like, (N, H, W, C) or (H, W, C)
    ksize : int or (int, int)
    strides : int or (int, int), optional
        Defaults to ``ksize`` as in keras.
    padding : {"VALID", "SAME"}
        With ``SAME``, cells outside the image never win (they are not zeros).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    >>> max_pool2d(x, 2)[:, :, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    return _pool(_jit.max_pool, input, ksize, strides, padding)


def avg_pool2d(input, ksize, strides=None, padding="VALID") -> np.ndarray:
    """Average pooling (``tf.nn.avg_pool2d``, keras ``AvgPool2D``).

    With ``SAME`` padding each window is divided by the number of its cells
    that lie inside the image, as TensorFlow does.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    >>> avg_pool2d(x, 2, padding="SAME")[:, :, 0]
    array([[2. , 3.5],
           [6.5, 8. ]], dtype=float32)
    """
    return _pool(_jit.avg_pool, input, ksize, strides, padding)


def global_avg_pool2d(input, keepdims: bool = False) -> np.ndarray:
    """Mean over height and width (keras ``GlobalAvgPool2D``), accumulated in float64.

    Returns (N, C), or (N, 1, 1, C) with ``keepdims=True``; an (H, W, C) input
    gives (C,) or (1, 1, C).
    """
    x, added = _as_batch(input)
    out = x.mean(axis=(1, 2), dtype=np.float64, keepdims=keepdims).astype(np.float32)
    return _unbatch(out, added)


def global_max_pool2d(input, keepdims: bool = False) -> np.ndarray:
    """Maximum over height and width (keras ``GlobalMaxPool2D``)."""
    x, added = _as_batch(input)
    return _unbatch(x.max(axis=(1, 2), keepdims=keepdims), added)


def bias_add(value, bias) -> np.ndarray:
    """Add a per-channel bias along the last axis (``tf.nn.bias_add``)."""
    value = np.asarray(value, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if bias.ndim > 1 or (bias.ndim == 1 and bias.shape[0] not in (1, value.shape[-1])):
        raise ValueError(
            f"bias must be a number or have one value per channel ({value.shape[-1]}), got shape {bias.shape}"
        )
    if not np.isfinite(bias).all():
        raise ValueError("bias must be finite")
    return value + bias


def relu(features) -> np.ndarray:
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


def activate(features, name: str = "none") -> np.ndarray:
    """Apply the activation called ``name`` (one of :data:`ACTIVATIONS`)."""
    key = str(name).lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return np.asarray(ACTIVATIONS[key](np.asarray(features, dtype=np.float32)), dtype=np.float32)
