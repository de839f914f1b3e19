"""Output-size and padding arithmetic, exactly as TensorFlow computes it.

Pure Python on purpose: ``convfilter shape`` and ``--help`` use it without
paying for numpy or Numba.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

PADDINGS = ("SAME", "VALID")
# The values of padding cells, named as ``tf.pad``'s modes (EDGE, numpy's "edge", is ours):
# CONSTANT zeros, REFLECT "dcb|abcd|cba" (the edge cell not repeated), SYMMETRIC "cba|abcd|dcb",
# EDGE "aaa|abcd|ddd".
BORDERS = ("CONSTANT", "REFLECT", "SYMMETRIC", "EDGE")
# a size, stride or dilation: one int for both axes, or (rows, cols)
IntOrPair = int | Sequence[int]
# a padding: "SAME" or "VALID" (any case), or explicit cells (see normalize_padding)
Padding = str | Sequence[Sequence[int]]


class AxisGeometry(NamedTuple):
    """How one spatial axis is transformed by a window (kernel or pool).

    ``out = (size - effective + pad_before + pad_after) // stride + 1`` holds
    for every padding, with ``effective = (window - 1) * dilation + 1``;
    ``padding`` is "SAME", "VALID" or "EXPLICIT" (the cells were given).
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


def pair(value: IntOrPair, name: str) -> tuple[int, int]:
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


def _whole(value) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or hasattr(value, "__index__"))


def normalize_padding(padding):
    """``"SAME"``, ``"VALID"`` or the explicit ``((top, bottom), (left, right))``, else ValueError.

    Accepts the names in any capitalisation, TensorFlow's explicit NHWC list
    ``[[0, 0], [top, bottom], [left, right], [0, 0]]`` (the batch and channel
    entries must be zero, as ``tf.nn.conv2d`` requires) and the pair of pairs
    ``((top, bottom), (left, right))``.

    Examples
    --------
    >>> normalize_padding("same")
    'SAME'
    >>> normalize_padding([[0, 0], [1, 2], [3, 4], [0, 0]])
    ((1, 2), (3, 4))
    """
    if isinstance(padding, str):
        if padding.upper() not in PADDINGS:
            raise ValueError(f"padding must be 'SAME' or 'VALID' (or explicit [[0, 0], [top, bottom], "
                             f"[left, right], [0, 0]]), got {padding!r}")
        return padding.upper()
    form = "[[0, 0], [top, bottom], [left, right], [0, 0]] or ((top, bottom), (left, right))"
    try:
        rows = [tuple(row) for row in padding]
    except TypeError:
        raise ValueError(f"padding must be 'SAME' or 'VALID' (or explicit {form}), got {padding!r}") from None
    if len(rows) not in (2, 4) or any(len(row) != 2 or not all(_whole(v) for v in row) for row in rows):
        raise ValueError(f"explicit padding must be whole numbers as {form}, got {_shown(padding)}")
    rows = [(int(a), int(b)) for a, b in rows]
    if len(rows) == 4:
        if rows[0] != (0, 0) or rows[3] != (0, 0):
            raise ValueError(f"explicit padding of the batch and channel axes must be [0, 0] (NHWC: only "
                             f"height and width are padded), got {_shown(padding)}")
        rows = rows[1:3]
    if min(min(row) for row in rows) < 0:
        raise ValueError(f"explicit padding must be >= 0, got {_shown(padding)}")
    return rows[0], rows[1]


def _shown(padding) -> str:
    """Explicit padding as a list for messages (numpy arrays print without commas)."""
    try:
        return str([[int(v) for v in row] for row in padding])
    except (TypeError, ValueError):
        return repr(padding)


def axis_padding(padding, index: int):
    """The padding of axis ``index`` (0 rows, 1 columns): a name, or that axis's ``(before, after)``."""
    return padding if isinstance(padding, str) else padding[index]


def describe_padding(padding) -> str:
    """``SAME``, ``VALID`` or ``T,B,L,R`` (the CLI's spelling of explicit padding)."""
    if isinstance(padding, str):
        return padding
    (top, bottom), (left, right) = padding
    return f"{top},{bottom},{left},{right}"


def normalize_border(border) -> str:
    """One of :data:`BORDERS` for any capitalisation, else ValueError."""
    if not isinstance(border, str) or border.upper() not in BORDERS:
        raise ValueError(f"border mode must be one of {', '.join(BORDERS)} (any case), got {border!r}")
    return border.upper()


def check_pool_padding(pool: str, padding, window: tuple[int, int]) -> None:
    """Refuse explicit padding where TensorFlow's pools refuse it (``pool`` "max" or "avg").

    ``tf.nn.avg_pool2d`` takes only SAME or VALID; ``tf.nn.max_pool2d`` takes
    explicit padding smaller than the window on each side, so that every window
    keeps at least one cell of the input.
    """
    if isinstance(padding, str):
        return
    if pool == "avg":
        raise ValueError(
            f"average pooling takes padding SAME or VALID only, got {describe_padding(padding)}: TensorFlow's "
            "avg pool has no explicit padding (to average with padding cells counted, pad first, then pool "
            "with VALID)"
        )
    (top, bottom), (left, right) = padding
    for side, cells, size in (("top", top, window[0]), ("bottom", bottom, window[0]), ("left", left, window[1]),
                              ("right", right, window[1])):
        if cells >= size:
            raise ValueError(
                f"max pool padding must be smaller than the window on each side, as TensorFlow requires: "
                f"{side} padding {cells} with a window of {size}"
            )


def border_limit(border: str, size: int) -> int | None:
    """The most padding cells ``border`` can fill beside ``size`` cells (None: any amount).

    ``tf.pad``'s limits: REFLECT mirrors without repeating the edge cell, so it
    reaches ``size - 1`` cells out; SYMMETRIC repeats it and reaches ``size``.
    EDGE needs a cell to repeat; CONSTANT fills anything.
    """
    if border == "REFLECT":
        return size - 1
    if border == "SYMMETRIC":
        return size
    return 0 if border == "EDGE" and size == 0 else None


def check_border(border: str, g: AxisGeometry, name: str) -> None:
    """Refuse the padding of axis ``g`` when ``border`` cannot fill it (``name``: e.g. "rows")."""
    limit = border_limit(border, g.size)
    if limit is not None and max(g.pad_before, g.pad_after) > limit:
        need = "smaller than" if border == "REFLECT" else "at most"
        raise ValueError(
            f"border {border.lower()} needs padding {need} the input: {g.pad_before}+{g.pad_after} {name} of "
            f"padding beside {g.size} {name}; use border edge, or a smaller window"
        )


def axis(size: int, window: int, stride: int = 1, padding="SAME", dilation: int = 1) -> AxisGeometry:
    """Geometry of one axis: output length and the padding before and after.

    ``SAME``: ``out = ceil(size / stride)``, total padding
    ``max((out - 1) * stride + effective - size, 0)`` with the odd cell after
    (bottom/right), as TensorFlow does. ``VALID``: no padding,
    ``out = (size - effective) // stride + 1``. A ``(before, after)`` pair is
    explicit padding: ``out = (size + before + after - effective) // stride + 1``.

    Examples
    --------
    >>> axis(427, 7, 1, "SAME")[5:]
    (427, 3, 3)
    >>> axis(5, 2, 2, "SAME")[5:]
    (3, 0, 1)
    >>> axis(10, 3, 3, "VALID")[5:]
    (3, 0, 0)
    >>> axis(5, 3, 2, (0, 2))[5:]
    (3, 0, 2)
    """
    if isinstance(padding, str):
        padding = normalize_padding(padding)
    else:
        before, after = padding
    for name, value in (("size", size), ("window", window), ("stride", stride), ("dilation", dilation)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    effective = (window - 1) * dilation + 1
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + effective - size, 0)
        before = total // 2
        return AxisGeometry(size, window, stride, dilation, padding, out, before, total - before)
    if not isinstance(padding, str):
        if before < 0 or after < 0:
            raise ValueError(f"explicit padding must be >= 0, got {before}, {after}")
        if effective > size + before + after:
            raise ValueError(
                f"window {effective} is larger than the input size {size} plus its padding {before}+{after}; "
                "pad more or use a smaller window"
            )
        out = (size + before + after - effective) // stride + 1
        return AxisGeometry(size, window, stride, dilation, "EXPLICIT", out, before, after)
    if effective > size:
        raise ValueError(
            f"window {effective} is larger than the input size {size} with padding=VALID; "
            "use padding SAME or a smaller window"
        )
    out = (size - effective) // stride + 1
    return AxisGeometry(size, window, stride, dilation, padding, out, 0, 0)


def output_size(input_size: IntOrPair, window: IntOrPair, strides: IntOrPair = 1, padding: Padding = "SAME",
                dilations: IntOrPair = 1) -> tuple[int, int]:
    """Output ``(height, width)`` of a convolution or pooling window over ``input_size``.

    Parameters
    ----------
    input_size : int or (int, int)
        Input height and width.
    window : int or (int, int)
        Kernel or pool size.
    strides, dilations : int or (int, int)
    padding : "SAME", "VALID" or explicit, as :func:`normalize_padding` accepts

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
    padding = normalize_padding(padding)
    return tuple(
        axis(sizes[k], windows[k], strides[k], axis_padding(padding, k), dilations[k]).out for k in range(2)
    )
