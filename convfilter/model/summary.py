"""``convfilter model summary``: each layer, its output shape, its parameters, and for windowed
layers the size arithmetic on each axis (as ``convfilter shape`` prints it)."""

from __future__ import annotations

from ..geometry import axis
from ..shape import arithmetic, padding_note
from .graph import Model
from .layers import _Windowed

HEADER = ("layer", "type", "output", "params", "options", "axis", "arithmetic", "padding")


def _shape_text(shape: tuple) -> str:
    return "x".join("?" if v is None else str(v) for v in shape)


def describe(model: Model, size: tuple | None = None) -> list[str]:
    """Table lines for ``model`` on an input of ``size`` (H, W, C); default its own input shape."""
    shapes = model.output_shapes(size)
    input_shape = shapes[model._source]
    rows = [(model._source, "InputLayer", _shape_text(input_shape), "0", "", "", "", "")]
    for name in model.layers:
        layer, node = model.layer(name), model._by_name[name]
        out = _shape_text(shapes[name])
        params = str(layer.parameters)
        in_shape = shapes[node.inputs[0]] if node.inputs else None
        if isinstance(layer, _Windowed) and in_shape is not None and None not in in_shape[:2]:
            gh = axis(in_shape[0], layer.window[0], layer.strides[0], layer.padding, layer.dilation[0])
            gw = axis(in_shape[1], layer.window[1], layer.strides[1], layer.padding, layer.dilation[1])
            rows.append((name, layer.kind, out, params, layer.describe(), "H", arithmetic(gh), padding_note(gh, "H")))
            rows.append(("", "", "", "", "", "W", arithmetic(gw), padding_note(gw, "W")))
        else:
            inputs = f"from {', '.join(node.inputs)}" if len(node.inputs) > 1 else ""
            rows.append((name, layer.kind, out, params, "; ".join(t for t in (layer.describe(), inputs) if t),
                         "", "", ""))
    total = sum(model.layer(name).parameters for name in model.layers)
    title = f"Model: {model.name}, input {_shape_text(input_shape)}"
    title += " (fixed size)" if model.fixed_size else " (any height and width)" if size is None else ""
    widths = [max(len(r[k]) for r in [HEADER] + rows) for k in range(len(HEADER))]
    table = ["  ".join(cell.ljust(widths[k]) for k, cell in enumerate(r)).rstrip() for r in [HEADER] + rows]
    return [title, ""] + table + ["", f"Total parameters: {total:,}"]
