"""Reading Keras model files with h5py: the model's config and its weights, nothing run.

Two formats:

- Keras 3 ``.keras``: a zip archive holding ``config.json`` and ``model.weights.h5``. In the
  weights file each layer is a group ``layers/<snake_case class name>[_<n>]/vars`` whose
  datasets ``0``, ``1``, ... are the layer's variables in the layer's own order; recent Keras
  also names the layer in the ``vars`` group's ``name`` attribute.
- legacy full-model HDF5 (``.h5``): the config is the JSON attribute ``model_config`` and the
  weights are under ``model_weights/<layer name>``, listed by the ``weight_names`` attribute
  (``conv2d/kernel`` in Keras 3, ``conv2d/kernel:0`` in Keras 2).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
INSTALL_HINT = "pip install 'convfilter[keras]'"


class ModelError(ValueError):
    """A model file that cannot be read or run: not a Keras model, truncated, inconsistent,
    or using a layer convfilter does not implement."""


@dataclass
class ModelFile:
    """What a Keras model file holds: the model config and each layer's variables.

    ``weights`` maps a layer name to its variables in the layer's order, each ``(name,
    array)``; the name is None when the file does not record it (``.keras`` files number the
    variables). ``by_position`` maps ``<snake_case class>[_<n>]`` keys to the same, for
    ``.keras`` files that do not name the layer of each group.
    """

    config: dict
    weights: dict[str, list[tuple[str | None, np.ndarray]]] = field(default_factory=dict)
    by_position: dict[str, list[tuple[str | None, np.ndarray]]] = field(default_factory=dict)


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ModelError(f"reading Keras models needs h5py: {INSTALL_HINT}") from None
    return h5py


def snake_case(class_name: str) -> str:
    """Keras' group name for a class: ``DepthwiseConv2D`` -> ``depthwise_conv2d``, ``ReLU`` -> ``re_lu``."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def read(path) -> ModelFile:
    """Read the config and weights of the Keras model file at ``path`` (``.keras`` or ``.h5``).

    Raises ModelError for anything that is not a complete Keras model file, naming the problem.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except IsADirectoryError:
        raise ModelError("is a directory, not a Keras model file") from None
    except OSError as exc:
        from ..messages import os_error_text

        raise ModelError(os_error_text(exc)) from None
    if head.startswith(ZIP_MAGIC):
        return _read_keras_zip(path)
    if head == HDF5_MAGIC:
        return _read_legacy_h5(path)
    if not head:
        raise ModelError("the file is empty, not a Keras model")
    raise ModelError("not a Keras model file: expected a .keras archive (zip) or a full-model .h5 (HDF5)")


def _parse_config(text, where: str) -> dict:
    try:
        config = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "class_name" not in config or not isinstance(config.get("config"), dict):
        raise ModelError(f"{where} does not describe a Keras model")
    return config


def _read_keras_zip(path: Path) -> ModelFile:
    h5py = _h5py()
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelError("a zip archive without config.json: not a Keras .keras model file")
            config = _parse_config(archive.read("config.json"), "config.json")
            if "model.weights.h5" not in names:
                raise ModelError("the .keras archive has no model.weights.h5 (a model saved without weights?)")
            data = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise ModelError(f"not a readable .keras archive (truncated or damaged?): {exc}") from None
    except (OSError, RuntimeError) as exc:  # zlib errors, CRC mismatches, encrypted members
        raise ModelError(f"cannot read the .keras archive (truncated or damaged?): {exc}") from None
    model = ModelFile(config)
    try:
        with h5py.File(io.BytesIO(data), "r") as weights:
            groups = weights.get("layers")
            if groups is None:
                return model  # a model with no layers holding weights still has the group; check later
            for key in groups:
                variables = groups[key].get("vars")
                arrays = [] if variables is None else _numbered(variables)
                model.by_position[key] = arrays
                layer_name = variables.attrs.get("name") if variables is not None else None
                if isinstance(layer_name, bytes):
                    layer_name = layer_name.decode()
                if layer_name:
                    model.weights[str(layer_name)] = arrays
    except OSError as exc:
        raise ModelError(f"model.weights.h5 in the archive is not readable HDF5 (truncated?): {exc}") from None
    return model


def _numbered(group) -> list[tuple[None, np.ndarray]]:
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    return [(None, np.asarray(group[k][()])) for k in keys]


def _read_legacy_h5(path: Path) -> ModelFile:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            if raw is None:
                if "layers" in handle or "layer_names" in handle.attrs or "model_weights" in handle:
                    raise ModelError("holds weights without a model config (saved with save_weights?); "
                                     "load the full model saved with model.save()")
                raise ModelError("an HDF5 file without a Keras model config (model_config)")
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            model = ModelFile(_parse_config(raw, "model_config"))
            group = handle.get("model_weights")
            if group is None:
                raise ModelError("the .h5 file has a model config but no model_weights")
            for layer_name in group:
                layer_group = group[layer_name]
                names = [n.decode() if isinstance(n, bytes) else str(n)
                         for n in layer_group.attrs.get("weight_names", [])]
                arrays = []
                for name in names:
                    if name not in layer_group:
                        raise ModelError(f"layer '{layer_name}': weight '{name}' is listed but missing")
                    arrays.append((_short_name(name), np.asarray(layer_group[name][()])))
                model.weights[layer_name] = arrays
    except OSError as exc:
        raise ModelError(f"not a readable HDF5 file (truncated or damaged?): {exc}") from None
    return model


def _short_name(weight_name: str) -> str:
    """``conv1/kernel:0`` -> ``kernel``: the variable's own name."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
