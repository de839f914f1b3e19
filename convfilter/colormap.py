"""Colour maps: small lookup tables that turn a [0, 1] map into RGB, no plotting library.

Each map is a few anchor colours, evenly spaced over [0, 1], interpolated
linearly into a 255-entry table (odd, so that the middle entry is exactly the
middle anchor), so a map is easy to read and to check.

- ``gray``: black to white; the book's figures (one channel, no table).
- ``diverging``: blue, white, red. Meant for signed responses (edge
  detectors): with the ``signed`` normalisation zero lands on the white
  middle, the most negative value on blue and the most positive on red.
- ``viridis``: a perceptually uniform sequential map (dark purple to yellow),
  sampled from matplotlib's viridis at nine points.

The anchors are plain tuples, so listing the names costs no numpy import.
"""

from __future__ import annotations

# anchor colours (0-255 RGB), evenly spaced from 0 to 1
ANCHORS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "gray": ((0, 0, 0), (255, 255, 255)),
    # blue -> white -> red, the two halves mirror each other in lightness
    "diverging": ((33, 102, 172), (103, 169, 207), (209, 229, 240), (255, 255, 255),
                  (253, 219, 199), (239, 138, 98), (178, 24, 43)),
    "viridis": ((68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
                (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37)),
}
COLORMAPS = tuple(ANCHORS)
LEVELS = 255  # odd: 0.5 picks entry 127, exactly the centre anchor


def default_normalization(colormap: str) -> str:
    """``signed`` for the diverging map (zero in the middle), else ``minmax`` (the book's)."""
    return "signed" if colormap == "diverging" else "minmax"


def table(name: str):
    """The ``(LEVELS, 3)`` uint8 lookup table of colour map ``name``.

    Examples
    --------
    >>> table("diverging")[[0, -1]].tolist()
    [[33, 102, 172], [178, 24, 43]]
    >>> table("diverging")[127].tolist()
    [255, 255, 255]
    """
    import numpy as np

    if name not in ANCHORS:
        raise ValueError(f"unknown colour map {name!r}; choose {', '.join(COLORMAPS)}")
    anchors = np.asarray(ANCHORS[name], np.float64)
    positions = np.linspace(0.0, 1.0, len(anchors))
    levels = np.linspace(0.0, 1.0, LEVELS)
    channels = [np.interp(levels, positions, anchors[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


def colorize(scaled, name: str):
    """RGB uint8 ``(H, W, 3)`` of a one-channel map already scaled into [0, 1].

    Value ``t`` picks entry ``round(t * (LEVELS - 1))``, so 0 gives the
    first anchor, 1 the last and 0.5 the middle entry.
    """
    import numpy as np

    scaled = np.asarray(scaled, np.float32)
    if scaled.ndim == 3:
        if scaled.shape[2] != 1:
            raise ValueError(
                f"a colour map shows one-channel maps; this map has {scaled.shape[2]} channels "
                "(use --channels sum or gray, or --colormap gray)"
            )
        scaled = scaled[:, :, 0]
    index = np.round(np.clip(scaled, 0.0, 1.0) * (LEVELS - 1)).astype(np.intp)
    return table(name)[index]
