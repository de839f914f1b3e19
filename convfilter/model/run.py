"""A model as the recipe of a batch (``convfilter model apply``): which layers to write, and how
an input becomes model input. Picklable: workers load the model from its path once each."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .inputs import DEFAULT_SCALE

_LOADED: dict[tuple[str, int, int], object] = {}  # (path, size, mtime_ns) -> Model, per process


@dataclass(frozen=True)
class ModelRun:
    """Run the model at ``path`` on each input and keep the outputs of ``layers``."""

    path: str
    layers: tuple[str, ...]
    scale: float = DEFAULT_SCALE
    resize: bool = False

    def model(self):
        """The loaded model (once per process and file version)."""
        stat = os.stat(self.path)
        key = (os.path.abspath(self.path), stat.st_size, stat.st_mtime_ns)
        if key not in _LOADED:
            from . import load_model

            _LOADED.clear()
            _LOADED[key] = load_model(self.path)
        return _LOADED[key]

    def labels(self) -> list[str]:
        """The ``{kernel}`` label of every file one input gives: the layer names."""
        return list(self.layers)

    def metadata(self, version: str) -> str:
        return json.dumps({"version": version, "model": os.path.basename(self.path), "layers": list(self.layers),
                           "scale": self.scale, "resize": self.resize})

    def feature_maps(self, array, raw: bool) -> list[tuple[str, object]]:
        """``[(layer, output)]`` for one (H, W, C) input (``raw``: a .npy taken as it is)."""
        from .inputs import prepare

        model = self.model()
        x = prepare(array, model, scale=self.scale, raw=raw, resize=self.resize)
        return list(model.feature_maps(x, self.layers).items())

    def memory_bound(self, height: int, width: int, channels: int) -> int:
        """Bytes one input needs at most (an estimate): every layer output of the run at once,
        twice (the layer's result and its encoded copy), plus the input."""
        model = self.model()
        size = model.fixed_size if self.resize and model.fixed_size else (height, width)
        try:
            shapes = model.output_shapes((*size, model.channels or channels))
        except ValueError:  # the input does not fit: the run says so with its own message
            return 0
        cells = 0
        for shape in shapes.values():
            count = 1
            for v in shape:
                count *= v or 1
            cells += count
        return 4 * (2 * cells + height * width * channels)


def default_layers(model) -> list[str]:
    """Every convolution and pooling layer (what ``model apply`` writes without --layers)."""
    return [name for name in model.layers if model.layer(name).shows_maps]


def choose_layers(model, text: str | None) -> list[str]:
    """The layers named by ``--layers`` (``NAME,NAME`` or ``all``); ValueError naming unknown ones."""
    if not text:
        return default_layers(model)
    if text.strip().lower() == "all":
        return list(model.layers)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in model.layers]
    if unknown:
        raise ValueError(f"no layer {', '.join(repr(n) for n in unknown)} in the model; "
                         f"its layers: {', '.join(model.layers)}")
    if not names:
        raise ValueError("--layers needs layer names (NAME,NAME) or 'all'")
    return list(dict.fromkeys(names))
