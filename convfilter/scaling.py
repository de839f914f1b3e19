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


def normalize(data: np.ndarray, method: str = "minmax") -> np.ndarray:
    """``data`` scaled into [0, 1] as float32 by ``method`` (minmax, clip, abs or signed)."""
    data = np.asarray(data, dtype=np.float32)
    if method == "clip":
        return np.clip(data, 0.0, 1.0)
    if method in ("abs", "signed"):
        magnitude = np.abs(data)
        peak = float(magnitude.max()) if magnitude.size else 0.0
        if method == "abs":
            return magnitude / np.float32(peak) if peak > 0 else np.zeros_like(data)
        if peak == 0:
            return np.full_like(data, 0.5)
        return (data / np.float32(2 * peak) + np.float32(0.5)).clip(0.0, 1.0)
    if method == "minmax":
        low = float(data.min()) if data.size else 0.0
        span = float(data.max()) - low if data.size else 0.0
        if span > 0:
            return ((data - np.float32(low)) / np.float32(span)).clip(0.0, 1.0)
        return np.zeros_like(data)
    raise ValueError(f"unknown normalization {method!r}; choose minmax, clip, abs or signed")


def to_pixels(data: np.ndarray, normalization: str = "minmax", colormap: str = "gray") -> np.ndarray:
    """8-bit pixels of an (H, W, K) map: (H, W) for gray, (H, W, 3) for colour.

    The map is scaled by ``normalization`` and, unless ``colormap`` is gray,
    a one-channel map is looked up in that colour map's table. A (H, W, 3)
    map is shown as RGB and takes only the gray colour map.
    """
    channels = data.shape[2]
    if channels not in (1, 3):
        raise ValueError(f"a png image holds 1 or 3 channels, this map has {channels}; use -f npy")
    scaled = normalize(data, normalization)
    if colormap != "gray":
        from .colormap import colorize

        return colorize(scaled, colormap)
    pixels = np.round(scaled * 255).astype(np.uint8)
    return pixels[:, :, 0] if channels == 1 else pixels
