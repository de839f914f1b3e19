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

    @property
    def label(self) -> str:
        """What a montage of the run shows, for its name: the model file's stem."""
        return os.path.splitext(os.path.basename(self.path))[0]

    def labels(self) -> list[str]:
        """The ``{kernel}`` label of every file one input gives: the layer names."""
        return list(self.layers)

    def metadata(self, version: str) -> str:
        return json.dumps({"version": version, "model": os.path.basename(self.path), "layers": list(self.layers),
                           "scale": self.scale, "resize": self.resize})

    def run(self, loaded) -> list:
        """The output of every layer of the run for one input read by ``io.load``, as
        ``pipeline.FeatureMap`` (label: the layer; data: its output as it is)."""
        from ..pipeline import FeatureMap
        from .inputs import prepare

        model = self.model()
        x = prepare(loaded.array, model, scale=self.scale, raw=loaded.raw, resize=self.resize)
        return [FeatureMap(name, value) for name, value in model.feature_maps(x, self.layers).items()]

    def drawn(self, maps: list, plan, loaded, metadata: dict, threads: int = 1) -> list[tuple[str, tuple, bytes]]:
        """PNG outputs ``(label, shape, bytes)``: each layer as a grid of its channels (one tile
        per channel), or with ``--montage`` every channel of every layer in one grid."""
        from .. import io, montage

        view = plan.view
        if view.montage:
            tiles = [tile for m in maps for tile in channel_maps(m, prefix=f"{m.label}:")]
            picture = montage.draw(tiles, plan.normalization, view.colormap, view.columns,
                                   loaded.array if view.with_input else None, loaded.stem)
            return [(plan.labels(self)[0], (picture.height, picture.width, 3),
                     io.png_bytes(picture, metadata, view.png_compression, threads))]
        outputs = []
        for m in maps:
            picture = montage.draw(channel_maps(m), plan.normalization, view.colormap)
            outputs.append((m.label, m.data.shape, io.png_bytes(picture, metadata, view.png_compression, threads)))
        return outputs

    def warm(self) -> None:
        """Load the model and its kernels before workers fork (a tiny input of its size)."""
        import numpy as np

        model = self.model()
        height, width = model.fixed_size or (32, 32)
        try:
            model.feature_maps(np.zeros((height, width, model.channels or 3), np.float32), self.layers)
        except ValueError:  # too small for the model's windows: nothing to warm
            pass

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


def channel_maps(feature, prefix: str = "") -> list:
    """One ``FeatureMap`` per channel of a layer output, labelled by channel number; a vector
    (after a global pool, Flatten or Dense) is one 1xC strip."""
    from ..pipeline import FeatureMap

    data = feature.data
    if data.ndim == 1:
        return [FeatureMap(prefix.rstrip(":") or feature.label, data.reshape(1, -1, 1))]
    return [FeatureMap(f"{prefix}{k}", data[:, :, k:k + 1]) for k in range(data.shape[2])]


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
