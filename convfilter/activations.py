"""Activation functions by keras's names, each applied in place to a float32 array.

In place, so that a convolution applies its activation to each finished
tile or to its result without a second full-size array.
"""

from __future__ import annotations

import numpy as np

from . import _backend

_NO_BIAS = np.zeros(1, np.float32)


def _relu(x: np.ndarray) -> None:
    """``np.maximum(x, 0)`` in place (NaN stays, every other value not above 0 becomes +0.0): on
    a C-contiguous array by the convolutions' finishing pass (``finish_rows``, compiled once
    Numba pays), as ``np.maximum`` runs at a third of an addition's speed (a 56x56x256 map:
    0.57 -> 0.22 ms with the copy before it), the same bits."""
    if x.flags.c_contiguous and x.dtype == np.float32 and x.size:
        _backend.kernel("finish_rows", x.size)(x.reshape(1, -1), _NO_BIAS, False, True)
    else:
        np.maximum(x, np.float32(0), out=x)


def _relu6(x: np.ndarray) -> None:
    np.clip(x, np.float32(0), np.float32(6), out=x)  # min(max(x, 0), 6) in one pass, as tf.nn.relu6


def _abs(x: np.ndarray) -> None:
    np.abs(x, out=x)


def _sigmoid(x: np.ndarray) -> None:
    # 0.5 * (tanh(0.5 * x) + 1): stable for large |x|, the same float32 steps as written out
    x *= np.float32(0.5)
    np.tanh(x, out=x)
    x += np.float32(1)
    x *= np.float32(0.5)


def _tanh(x: np.ndarray) -> None:
    np.tanh(x, out=x)


# The one table of activations: name -> a function that changes its float32 argument in place
# (None: no change).
IN_PLACE = {
    "none": None,
    "relu": _relu,
    "relu6": _relu6,
    "abs": _abs,
    "sigmoid": _sigmoid,
    "tanh": _tanh,
}


def activation_name(name) -> str:
    """The key of :data:`IN_PLACE` for ``name`` (case-insensitive; None is "none")."""
    key = "none" if name is None else str(name).lower()
    if key not in IN_PLACE:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(IN_PLACE)}")
    return key


def apply_in_place(x: np.ndarray, name: str) -> None:
    """Apply the activation ``name`` (a key of :data:`IN_PLACE`) to the float32 array ``x``."""
    function = IN_PLACE[name]
    if function is not None:
        function(x)
