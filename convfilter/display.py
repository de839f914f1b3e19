"""Scaling raw feature maps into [0, 1] for viewing.

``minmax`` is what ``plt.imshow(map, cmap="gray")`` shows (the book's
figures): the map's minimum becomes black and its maximum white; a constant
map is black. ``clip`` keeps values as they are and clips them to [0, 1]
(right for blurs of a [0, 1] image). ``abs`` shows the magnitude of a signed
response: ``|x| / max|x|``, so zero is black and the strongest edge white.
A colour map (K = 3) is scaled as one, so its colours keep their balance.
"""

from __future__ import annotations

import numpy as np


def normalize(data: np.ndarray, method: str = "minmax") -> np.ndarray:
    """``data`` scaled into [0, 1] as float32 by ``method`` (minmax, clip or abs)."""
    data = np.asarray(data, dtype=np.float32)
    if method == "clip":
        return np.clip(data, 0.0, 1.0)
    if method == "abs":
        magnitude = np.abs(data)
        peak = float(magnitude.max()) if magnitude.size else 0.0
        return magnitude / np.float32(peak) if peak > 0 else np.zeros_like(data)
    if method == "minmax":
        low = float(data.min()) if data.size else 0.0
        span = float(data.max()) - low if data.size else 0.0
        if span > 0:
            return ((data - np.float32(low)) / np.float32(span)).clip(0.0, 1.0)
        return np.zeros_like(data)
    raise ValueError(f"unknown normalization {method!r}; choose minmax, clip or abs")
