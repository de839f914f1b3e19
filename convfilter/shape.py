"""The size of each stage of a recipe, with the arithmetic spelled out (``convfilter shape``).

Pure Python: it reads only the kernels' sizes.
"""

from __future__ import annotations

from .geometry import AxisGeometry
from .recipe import Recipe


def arithmetic(g: AxisGeometry) -> str:
    """``(N + Pbefore + Pafter - F) // S + 1 = out`` for one axis, F the dilated window."""
    window = str(g.window) if g.dilation == 1 else f"(({g.window}-1)*{g.dilation}+1)"
    return f"({g.size} + {g.pad_before} + {g.pad_after} - {window}) // {g.stride} + 1 = {g.out}"


def _row(stage: str, height: int, width: int, depth: int, note: str = "") -> tuple[str, str, str]:
    return stage, f"{height}x{width}x{depth}", note


def describe(height: int, width: int, channels: int, recipe: Recipe) -> list[str]:
    """Table lines: stage, output HxWxC, and how each axis was computed."""
    rows = [_row("input", height, width, channels)]
    stages = [(height, width)]
    conv = recipe.convolution
    if conv is not None:
        depth = channels if conv.channels == "each" else 1
        if conv.channels == "gray":
            rows.append(_row("gray", height, width, 1, "luminance"))
        by_size: dict[tuple[int, int], list[str]] = {}
        for kernel in conv.kernels:
            by_size.setdefault(kernel.size, []).append(kernel.label)
        stages = []
        for (kh, kw), labels in by_size.items():
            gh, gw = conv.geometry(height, width, (kh, kw))
            count = sum(k.map_count for k in conv.kernels if k.size == (kh, kw))
            name = f"conv {kh}x{kw} {conv.padding} ({', '.join(labels)})"
            rows.append(_row(name, gh.out, gw.out, depth,
                             f"{count} map(s); H: {arithmetic(gh)}; W: {arithmetic(gw)}"))
            stages.append((gh.out, gw.out))
        channels = depth
    pooling = recipe.pooling
    if pooling.type != "none":
        for h, w in stages:
            if pooling.is_global:
                rows.append(_row(f"{pooling.type} pool", 1, 1, channels, "one value per channel"))
                continue
            gh, gw = pooling.geometry(h, w)
            name = f"{pooling.type} pool {pooling.size[0]}x{pooling.size[1]} {pooling.padding}"
            rows.append(_row(name, gh.out, gw.out, channels, f"H: {arithmetic(gh)}; W: {arithmetic(gw)}"))
    widths = [max(len(r[k]) for r in rows) for k in range(2)]
    header = ("stage".ljust(widths[0]), "HxWxC".ljust(widths[1]), "arithmetic")
    lines = ["  ".join(header).rstrip()]
    lines += ["  ".join((r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2])).rstrip() for r in rows]
    return lines
