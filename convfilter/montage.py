"""All feature maps of one input in one labelled PNG grid (``--montage``).

Every tile is drawn exactly as its own PNG would be (same normalisation and
colour map, at its own size, never resized), so a stride-2 map shows up half
as large as a stride-1 map. Above each tile a strip holds its label and size,
written with Pillow's built-in default font (no font files needed).

Layout, in pixels: a ``GAP`` margin around and between the cells; every cell
is as wide as the widest tile and as tall as ``LABEL_HEIGHT`` plus the tallest
tile; tiles sit at the top-left of their cell, row by row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .scaling import to_pixels

GAP = 4
LABEL_HEIGHT = 14
BACKGROUND = (224, 224, 224)  # light gray, so white tiles keep their edges
INK = (0, 0, 0)
ONE_ROW_MAX = 4  # up to this many tiles sit in one row, like the book's figures


@dataclass(frozen=True)
class Tile:
    """One picture of the grid: its label and 8-bit pixels, (H, W) gray or (H, W, 3) RGB."""

    label: str
    pixels: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]


def grid_columns(count: int) -> int:
    """Columns for ``count`` tiles: one row up to ``ONE_ROW_MAX``, then the squarest grid.

    Examples
    --------
    >>> [grid_columns(n) for n in (1, 2, 4, 5, 9, 10)]
    [1, 2, 4, 3, 3, 4]
    """
    return count if count <= ONE_ROW_MAX else math.ceil(math.sqrt(count))


def tile_origins(sizes: list[tuple[int, int]], columns: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Canvas ``(height, width)`` and each tile's ``(top, left)`` pixel for tiles of ``sizes``.

    ``top`` is the tile's first image row; its label strip is the
    ``LABEL_HEIGHT`` rows above it.
    """
    columns = max(1, min(columns, len(sizes)))
    rows = math.ceil(len(sizes) / columns)
    cell_h = LABEL_HEIGHT + max(h for h, _ in sizes)
    cell_w = max(w for _, w in sizes)
    origins = [
        (GAP + (i // columns) * (cell_h + GAP) + LABEL_HEIGHT, GAP + (i % columns) * (cell_w + GAP))
        for i in range(len(sizes))
    ]
    return (GAP + rows * (cell_h + GAP), GAP + columns * (cell_w + GAP)), origins


def compose(tiles: list[Tile], columns: int | None = None) -> Image.Image:
    """The RGB montage of ``tiles``, ``columns`` wide (default: :func:`grid_columns`)."""
    if not tiles:
        raise ValueError("a montage needs at least one map")
    (height, width), origins = tile_origins([t.size for t in tiles], columns or grid_columns(len(tiles)))
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for tile, (top, left) in zip(tiles, origins):
        canvas.paste(Image.fromarray(tile.pixels).convert("RGB"), (left, top))
        text = _fitted(draw, font, tile.label, tile.size[1])
        draw.text((left + 1, top - LABEL_HEIGHT + 1), text, fill=INK, font=font)
    return canvas


def _fitted(draw: ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """``text`` shortened from the end until it fits ``width`` pixels (a label never spills over)."""
    while len(text) > 1 and draw.textlength(text, font=font) > width - 2:
        text = text[:-1]
    return text


def feature_tiles(maps, normalization: str, colormap: str) -> list[Tile]:
    """One tile per feature map, drawn as its own PNG would be, labelled ``name HxW``."""
    tiles = []
    for feature in maps:
        pixels = to_pixels(feature.data, normalization, colormap)
        tiles.append(Tile(f"{feature.label} {pixels.shape[0]}x{pixels.shape[1]}", pixels))
    return tiles


def input_tile(image: np.ndarray, stem: str) -> Tile:
    """The input as a tile: shown as it is when in [0, 1] (any image file), else min-max scaled."""
    inside = image.size == 0 or (float(image.min()) >= 0.0 and float(image.max()) <= 1.0)
    pixels = to_pixels(image, "clip" if inside else "minmax")
    return Tile(f"{stem} {pixels.shape[0]}x{pixels.shape[1]}", pixels)


def draw(maps, normalization: str, colormap: str = "gray", columns: int | None = None,
         image: np.ndarray | None = None, stem: str = "input") -> Image.Image:
    """The montage of one input's feature ``maps``; with ``image``, the input comes first."""
    tiles = feature_tiles(maps, normalization, colormap)
    if image is not None:
        tiles.insert(0, input_tile(image, stem))
    return compose(tiles, columns)
