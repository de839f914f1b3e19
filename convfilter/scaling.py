"""Scaling raw feature maps into [0, 1] for viewing.

``minmax`` is what ``plt.imshow(map, cmap="gray")`` shows (the book's
figures): the map's minimum becomes black and its maximum white; a constant
map is black. ``clip`` keeps values as they are and clips them to [0, 1]
(right for blurs of a [0, 1] image). ``abs`` shows the magnitude of a signed
response: ``|x| / max|x|``, so zero is black and the strongest edge white.
``signed`` keeps the sign: ``x / (2 max|x|) + 0.5``, so zero is the middle
(mid gray, or the neutral centre of a diverging colour map) and the limits
are symmetric, ``-max|x|`` and ``+max|x|``.
A colour map (K = 3) is scaled as one, so its colours keep their balance.
"""

from __future__ import annotations

import numpy as np


def normalize(data: np.ndarray, method: str = "minmax", *, overwrite: bool = False) -> np.ndarray:
    """``data`` scaled into [0, 1] as float32 by ``method`` (minmax, clip, abs or signed).

    A new array (callers may scale it further in place), or with ``overwrite``
    a float32 ``data`` itself, scaled in place: a large map then costs no copy.
    Every step after the first works in place either way.
    """
    data = np.asarray(data, dtype=np.float32)
    if method not in ("minmax", "clip", "abs", "signed"):
        raise ValueError(f"unknown normalization {method!r}; choose minmax, clip, abs or signed")
    out = data if overwrite and data.flags.writeable else None
    if method == "clip":
        return np.clip(data, 0.0, 1.0, out=out)
    if method == "minmax":
        low = float(data.min()) if data.size else 0.0
        span = float(data.max()) - low if data.size else 0.0
        if span == 0:
            return _filled(data, 0.0, out)
        scaled = np.subtract(data, np.float32(low), out=out)
        scaled /= np.float32(span)
    else:
        peak = float(max(-data.min(), data.max(), 0.0)) if data.size else 0.0  # max |x| without a copy
        if peak == 0:
            return _filled(data, 0.0 if method == "abs" else 0.5, out)
        if method == "abs":
            scaled = np.abs(data, out=out)
            scaled /= np.float32(peak)
            return scaled
        scaled = np.divide(data, np.float32(2 * peak), out=out)
        scaled += np.float32(0.5)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def _filled(data: np.ndarray, value: float, out: np.ndarray | None) -> np.ndarray:
    if out is None:
        return np.full_like(data, value)
    out.fill(value)
    return out


def to_pixels(data: np.ndarray, normalization: str = "minmax", colormap: str = "gray", *,
              overwrite: bool = False) -> np.ndarray:
    """8-bit pixels of an (H, W, K) map: (H, W) for gray, (H, W, 3) for colour.

    The map is scaled by ``normalization`` and, unless ``colormap`` is gray,
    a one-channel map is looked up in that colour map's table. A (H, W, 3)
    map is shown as RGB and takes only the gray colour map. ``overwrite`` lets
    the scaling reuse ``data`` (which then holds scaled values).
    """
    channels = data.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"a png image holds 1 or 3 channels, this map has {channels}; use -f npy")
    scaled = normalize(data, normalization, overwrite=overwrite)
    if colormap != "gray":
        from .colormap import colorize

        return colorize(scaled, colormap)
    scaled *= np.float32(255)
    pixels = np.round(scaled, out=scaled).astype(np.uint8)
    return pixels[:, :, 0] if channels == 1 else pixels
