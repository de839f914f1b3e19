"""Output-size and padding arithmetic, exactly as TensorFlow computes it.

Pure Python on purpose: ``convfilter shape`` and ``--help`` use it without
paying for numpy or Numba.
"""

from __future__ import annotations

from typing import NamedTuple

PADDINGS = ("SAME", "VALID")


class AxisGeometry(NamedTuple):
    """How one spatial axis is transformed by a window (kernel or pool).

    ``out = (size - effective + pad_before + pad_after) // stride + 1`` holds
    for both paddings, with ``effective = (window - 1) * dilation + 1``.
    """

    size: int
    window: int
    stride: int
    dilation: int
    padding: str
    out: int
    pad_before: int
    pad_after: int

    @property
    def effective(self) -> int:
        return (self.window - 1) * self.dilation + 1


def pair(value, name: str) -> tuple[int, int]:
    """Turn an int or a pair of ints into ``(rows, cols)``, checking both are >= 1.

    Examples
    --------
    >>> pair(2, "strides")
    (2, 2)
    >>> pair((2, 3), "strides")
    (2, 3)
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, not {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        items = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, not {value!r}") from None
        if len(items) == 4:  # TF's NHWC form [1, sh, sw, 1]
            if items[0] != 1 or items[3] != 1:
                raise ValueError(f"{name} in the 4-value form must be [1, h, w, 1], got {list(items)}")
            items = items[1:3]
        if len(items) != 2 or not all(isinstance(v, int) or hasattr(v, "__index__") for v in items):
            raise TypeError(f"{name} must be an int or a pair of ints, not {value!r}")
        items = (int(items[0]), int(items[1]))
    if items[0] < 1 or items[1] < 1:
        raise ValueError(f"{name} must be >= 1, got {items[0]},{items[1]}")
    return items


def normalize_padding(padding: str) -> str:
    """Return ``"SAME"`` or ``"VALID"`` for any capitalisation, else raise ValueError."""
    if not isinstance(padding, str) or padding.upper() not in PADDINGS:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    return padding.upper()


def axis(size: int, window: int, stride: int = 1, padding: str = "SAME", dilation: int = 1) -> AxisGeometry:
    """Geometry of one axis: output length and the zero padding before and after.

    ``SAME``: ``out = ceil(size / stride)``, total padding
    ``max((out - 1) * stride + effective - size, 0)`` with the odd cell after
    (bottom/right), as TensorFlow does. ``VALID``: no padding,
    ``out = (size - effective) // stride + 1``.

    Examples
    --------
    >>> axis(427, 7, 1, "SAME")[5:]
    (427, 3, 3)
    >>> axis(5, 2, 2, "SAME")[5:]
    (3, 0, 1)
    >>> axis(10, 3, 3, "VALID")[5:]
    (3, 0, 0)
    """
    padding = normalize_padding(padding)
    for name, value in (("size", size), ("window", window), ("stride", stride), ("dilation", dilation)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    effective = (window - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + effective - size, 0)
        before = total // 2
        return AxisGeometry(size, window, stride, dilation, padding, out, before, total - before)
    if effective > size:
        raise ValueError(
            f"window {effective} is larger than the input size {size} with padding=VALID; "
            "use padding SAME or a smaller window"
        )
    out = (size - effective) // stride + 1
    return AxisGeometry(size, window, stride, dilation, padding, out, 0, 0)


def output_size(input_size, window, strides=1, padding="SAME", dilations=1) -> tuple[int, int]:
    """Output ``(height, width)`` of a convolution or pooling window over ``input_size``.

    Parameters
    ----------
    input_size : int or (int, int)
        Input height and width.
    window : int or (int, int)
        Kernel or pool size.
    strides, dilations : int or (int, int)
    padding : {"SAME", "VALID"}

    Examples
    --------
    >>> output_size((427, 640), 7, 1, "SAME")
    (427, 640)
    >>> output_size((427, 640), 7, 2, "VALID")
    (211, 317)
    """
    sizes = pair(input_size, "input_size")
    windows = pair(window, "window")
    strides = pair(strides, "strides")
    dilations = pair(dilations, "dilations")
    return tuple(
        axis(sizes[k], windows[k], strides[k], padding, dilations[k]).out for k in range(2)
    )
