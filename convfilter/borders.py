"""The values of padding cells: ``pad`` (named and behaving like ``tf.pad``) and the border of
the padded copy that ``conv2d`` filters.

Every mode is an index map: padded position ``p`` (``-before <= p < size + after``) takes the
value of the input cell :func:`source_index` gives it, so one function serves both ``pad`` and
the convolution's padded copy (which fills its border in place, after the copy of the image).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .geometry import BORDERS, border_limit, normalize_border

__all__ = ["pad", "BORDERS"]


def source_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each padded position along an axis, the input cell it copies (``mode`` not CONSTANT).

    REFLECT mirrors about the edge cell (period ``2*size - 2``), SYMMETRIC about the
    edge (period ``2*size``), EDGE repeats the edge cell.

    Examples
    --------
    >>> source_index(4, 2, 3, "REFLECT").tolist()
    [2, 1, 0, 1, 2, 3, 2, 1, 0]
    >>> source_index(4, 2, 3, "SYMMETRIC").tolist()
    [1, 0, 0, 1, 2, 3, 3, 2, 1]
    >>> source_index(4, 2, 3, "EDGE").tolist()
    [0, 0, 0, 1, 2, 3, 3, 3, 3]
    """
    p = np.arange(-before, size + after)
    if mode == "EDGE" or size == 1:
        return np.clip(p, 0, size - 1)
    if mode == "SYMMETRIC":
        period = 2 * size
        m = p % period
        return np.where(m >= size, period - 1 - m, m)
    if mode == "REFLECT":
        period = 2 * size - 2
        m = p % period
        return np.where(m >= size, period - m, m)
    raise ValueError(f"no index map for border mode {mode!r}")


def _paddings(paddings, ndim: int) -> list[tuple[int, int]]:
    """``(before, after)`` for every axis: ``paddings`` is (ndim, 2) as ``tf.pad`` takes it, or, for
    an (N, H, W, C) or (H, W, C) image, ``((top, bottom), (left, right))``."""
    try:
        rows = [tuple(row) for row in paddings]
    except TypeError:
        raise ValueError(f"paddings must be {ndim} pairs (before, after), one per axis, got {paddings!r}") from None
    if len(rows) == 2 and ndim in (3, 4) and all(len(row) == 2 for row in rows):
        rows = [(0, 0)] * (ndim - 3) + rows + [(0, 0)]
    whole = all(not isinstance(v, bool) and hasattr(v, "__index__") for row in rows for v in row)
    if len(rows) != ndim or any(len(row) != 2 for row in rows) or not whole:
        raise ValueError(f"paddings must be {ndim} pairs of whole numbers (before, after), one per axis"
                         f"{' (or ((top, bottom), (left, right)) for an image)' if ndim in (3, 4) else ''}, "
                         f"got {paddings!r}")
    rows = [(int(a), int(b)) for a, b in rows]
    if any(a < 0 or b < 0 for a, b in rows):
        raise ValueError(f"paddings must be >= 0, got {rows}")
    return rows


def pad(tensor: ArrayLike, paddings: ArrayLike, mode: str = "CONSTANT", constant_values: float = 0) -> np.ndarray:
    """Pad an array as ``tf.pad`` does, plus an EDGE mode.

    Parameters
    ----------
    tensor : array_like, any number of axes
    paddings : (ndim, 2) array_like of whole numbers >= 0
        ``paddings[k] = (before, after)`` cells added on axis ``k``. For an
        (N, H, W, C) or (H, W, C) image, ``((top, bottom), (left, right))``
        pads height and width only.
    mode : {"CONSTANT", "REFLECT", "SYMMETRIC", "EDGE"}, case-insensitive
        ``CONSTANT`` fills with ``constant_values``; ``REFLECT`` mirrors
        without repeating the edge cell (``[1, 2, 3]`` padded by 2: ``3 2 | 1 2 3 | 2 1``)
        and needs each padding smaller than its axis; ``SYMMETRIC`` repeats it
        (``2 1 | 1 2 3 | 3 2``) and needs each padding at most its axis;
        ``EDGE`` repeats the edge cell (``1 1 | 1 2 3 | 3 3``).
    constant_values : scalar, default 0
        The value of the padding cells with ``CONSTANT``; it must fit the array's dtype.

    Returns
    -------
    numpy.ndarray of the input's dtype (as ``tf.pad``: no conversion to float32)

    Examples
    --------
    >>> pad([[1, 2, 3]], [[0, 0], [2, 2]], "REFLECT")
    array([[3, 2, 1, 2, 3, 2, 1]])
    >>> pad([[1, 2, 3]], [[0, 0], [2, 2]], "symmetric")
    array([[2, 1, 1, 2, 3, 3, 2]])
    >>> pad([[1, 2, 3]], [[1, 0], [0, 1]], constant_values=9)
    array([[9, 9, 9, 9],
           [1, 2, 3, 9]])
    """
    array = np.asarray(tensor)
    mode = normalize_border(mode)
    pads = _paddings(paddings, array.ndim)
    for k, ((before, after), size) in enumerate(zip(pads, array.shape)):
        limit = border_limit(mode, size)
        if limit is not None and max(before, after) > limit:
            need = {"REFLECT": "smaller than", "SYMMETRIC": "at most"}.get(mode)
            problem = f"needs paddings {need} the axis size" if need else "cannot pad an empty axis"
            raise ValueError(f"mode {mode} {problem}: axis {k} has {size} cells and padding {before}, {after}")
    if mode == "CONSTANT":
        fill = np.asarray(constant_values)
        if fill.ndim or fill.dtype.kind not in "biuf":
            raise ValueError(f"constant_values must be one number, got {constant_values!r}")
        value = fill.astype(array.dtype)
        if value != fill:
            raise ValueError(f"constant_values {constant_values!r} does not fit the array's dtype {array.dtype}")
        out = np.full([size + a + b for size, (a, b) in zip(array.shape, pads)], value, array.dtype)
        out[tuple(slice(a, a + size) for size, (a, _) in zip(array.shape, pads))] = array
        return out
    for k, (before, after) in enumerate(pads):
        if before or after:
            array = np.take(array, source_index(array.shape[k], before, after, mode), axis=k)
    return np.array(array)  # a fresh array even when nothing was padded, as the CONSTANT branch gives


def fill_border(planes: np.ndarray, top: int, left: int, height: int, width: int, mode: str) -> None:
    """Fill the border of padded planes ``(..., Hp, Wp)`` around ``[top, +height) x [left, +width)``
    in place with ``mode``'s values (the image cells must already be in place).

    The left and right columns of the image rows come first, then whole padded rows are copied
    to the top and bottom, so the corners follow both axes' rule (as :func:`pad` gives).
    """
    if mode == "CONSTANT":
        return  # the padded copy's border is zero already
    padded_h, padded_w = planes.shape[-2:]
    rows = source_index(height, top, padded_h - top - height, mode) + top
    cols = source_index(width, left, padded_w - left - width, mode) + left
    inner = planes[..., top : top + height, :]
    if left:
        inner[..., :left] = inner[..., cols[:left]]
    if left + width < padded_w:
        inner[..., left + width :] = inner[..., cols[left + width :]]
    if top:
        planes[..., :top, :] = planes[..., rows[:top], :]
    if top + height < padded_h:
        planes[..., top + height :, :] = planes[..., rows[top + height :], :]
