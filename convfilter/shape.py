"""The size of each stage of a recipe, with the arithmetic spelled out (``convfilter shape``).

Every stage gets two table rows, one per axis: height (rows) then width
(columns), each with ``(N - F + Pbefore + Pafter) // S + 1 = out``, the
book's ``(N - F + 2P) / S + 1`` written with the padding TensorFlow really
uses (SAME puts the odd cell after, at the bottom or right). ``F`` is the
dilated window ``(F - 1) * D + 1`` when the dilation D is more than 1.

Pure Python: it reads only the kernels' sizes.
"""

from __future__ import annotations

from .geometry import AxisGeometry, describe_padding
from .recipe import Recipe

FORMULA = (
    "out = (N - F + P) // S + 1 on each axis (the book's (N - F + 2P)/S + 1): N input size, F window,",
    "S stride, P = padding before + after as TensorFlow pads it (SAME: the odd cell goes after) or as given",
)
HEADER = ("stage", "HxWxC", "axis", "arithmetic", "padding")
SIDES = {"H": ("top", "bottom"), "W": ("left", "right")}


def arithmetic(g: AxisGeometry) -> str:
    """``(N - F + Pbefore + Pafter) // S + 1 = out`` for one axis, F the dilated window.

    Examples
    --------
    >>> from .geometry import axis
    >>> arithmetic(axis(640, 7, 2, "SAME"))
    '(640 - 7 + 2 + 3) // 2 + 1 = 320'
    """
    return f"({g.size} - {g.effective} + {g.pad_before} + {g.pad_after}) // {g.stride} + 1 = {g.out}"


def padding_note(g: AxisGeometry, name: str) -> str:
    """Where the padding cells go on axis ``name`` ("H" or "W"), e.g. ``2 left, 3 right``."""
    if g.pad_before == g.pad_after == 0:
        return "none"
    before, after = SIDES[name]
    return f"{g.pad_before} {before}, {g.pad_after} {after}"


def _stage(title: str, detail: str, size: tuple[int, int, int] | None, gh: AxisGeometry, gw: AxisGeometry):
    """The two rows of a windowed stage: the title with the height, the detail with the width
    (``size`` None leaves the size to the row above)."""
    shape = "" if size is None else "x".join(str(v) for v in size)
    return [
        (title, shape, "H", arithmetic(gh), padding_note(gh, "H")),
        (f"  {detail}", "", "W", arithmetic(gw), padding_note(gw, "W")),
    ]


def _window(kind: str, size: tuple[int, int], padding, stride: tuple[int, int],
            dilation: tuple[int, int] = (1, 1), border: str = "CONSTANT") -> str:
    """E.g. ``conv 7x7 SAME stride 2``, ``conv 3x3 pad 1,1,0,0 border edge stride 1``."""
    shown = describe_padding(padding)
    text = f"{kind} {size[0]}x{size[1]} {shown if isinstance(padding, str) else 'pad ' + shown}"
    if border != "CONSTANT":
        text += f" border {border.lower()}"
    text += f" stride {_pair(stride)}"
    if dilation != (1, 1):
        effective = [(size[k] - 1) * dilation[k] + 1 for k in range(2)]
        text += f" dilation {_pair(dilation)} (F = {effective[0]}x{effective[1]})"
    return text


def _pair(values: tuple[int, int]) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]},{values[1]}"


def describe(height: int, width: int, channels: int, recipe: Recipe) -> list[str]:
    """Table lines: a formula line, a header, then the rows of every stage.

    All kernels make one layer. Kernels of several sizes show one block of
    arithmetic per size under the layer's row; the depth is the number of maps
    (times the channels with ``--channels each``), as ``-f npy`` stacks them.
    """
    rows = [("input", f"{height}x{width}x{channels}", "", "", "")]
    stages = [(height, width, channels, "input")]
    conv = recipe.convolution
    if conv is not None:
        per_map = channels if conv.channels == "each" else 1
        if conv.channels == "gray":
            rows.append(("gray (luminance)", f"{height}x{width}x1", "", "", ""))
        by_size: dict[tuple[int, int], list] = {}
        for kernel in conv.kernels:
            by_size.setdefault(kernel.size, []).append(kernel)
        stages = []
        for (kh, kw), group in by_size.items():
            gh, gw = conv.geometry(height, width, (kh, kw))
            depth = per_map * sum(k.map_count for k in group)
            title = _window("conv", (kh, kw), conv.padding, conv.stride, conv.dilation, conv.border)
            stages.append((gh.out, gw.out, depth, f"conv {kh}x{kw}", title, ", ".join(k.label for k in group),
                           gh, gw))
        if len(stages) == 1:
            rows += _stage(*stages[0][4:6], stages[0][:3], *stages[0][6:])
        else:  # one layer whose kernels differ in size: each size's arithmetic under the layer
            rows += _layer(stages)
            if len({stage[:2] for stage in stages}) == 1:  # one map size: pooled as one stack
                stages = [(*stages[0][:2], sum(stage[2] for stage in stages), "conv")]
        stages = [stage[:4] for stage in stages]
    pooling = recipe.pooling
    if pooling.type != "none":
        for h, w, depth, source in stages:
            after = f"after {source}" if len(stages) > 1 else ""
            if pooling.is_global:
                rows.append((f"{pooling.type} pool", f"1x1x{depth}", "", f"{pooling.kind.reduce} over {h}x{w}",
                             after))
                continue
            gh, gw = pooling.geometry(h, w)
            title = _window(f"{pooling.type} pool", pooling.size, pooling.padding, pooling.strides)
            rows += _stage(title, after, (gh.out, gw.out, depth), gh, gw)
    return [*FORMULA, ""] + _table([HEADER] + rows)


def _layer(stages) -> list[tuple[str, ...]]:
    """Rows of one convolution layer with kernels of several sizes: the layer with its output
    (all maps, when they share a size), then each size's window and arithmetic, indented."""
    depth = sum(stage[2] for stage in stages)
    sizes = {stage[:2] for stage in stages}
    if len(sizes) == 1:
        (h, w), = sizes
        rows = [(f"conv layer, {depth} maps", f"{h}x{w}x{depth}", "", "", "")]
    else:
        rows = [(f"conv layer, {depth} maps", "", "", "", "maps of different sizes")]
    for h, w, group_depth, _, title, labels, gh, gw in stages:
        size = (h, w, group_depth) if len(sizes) > 1 else None
        rows += _stage(f"  {title.removeprefix('conv ')}", f"  {labels}", size, gh, gw)
    return rows


def _table(rows) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(HEADER))]
    return ["  ".join(cell.ljust(widths[k]) for k, cell in enumerate(r)).rstrip() for r in rows]
