"""Run the convolutional layers of a trained Keras model with convfilter's ops (no TensorFlow).

::

    from convfilter import load_model
    model = load_model("digits.keras")
    maps = model.feature_maps(image)      # {layer name: output}, float32 NHWC
    probabilities = model.predict(image)

Reading model files needs h5py (``pip install 'convfilter[keras]'``); see :mod:`.files`
for the formats and :mod:`.layers` for the layers that run.
"""

from __future__ import annotations

import os

from .files import ModelError
from .graph import Model

__all__ = ["load_model", "Model", "ModelError", "SUPPORTED_LAYERS"]


def load_model(path: str | os.PathLike) -> Model:
    """Read a Keras model file (``.keras`` or legacy full-model ``.h5``) into a runnable Model.

    Every layer is checked before anything runs: an unsupported layer, a config that does
    not fit its weights, or a file that is not a complete Keras model raises ModelError
    with a message naming the problem.

    Examples
    --------
    >>> model = load_model("digits.keras")  # doctest: +SKIP
    >>> model.layers  # doctest: +SKIP
    ['rescale', 'conv1', 'pool1', 'conv2', 'pool2', 'flatten', 'dropout', 'probs']
    """
    from . import files, graph

    return graph.from_file(files.read(path))


def __getattr__(name):
    if name == "SUPPORTED_LAYERS":
        from .layers import LAYERS

        return tuple(LAYERS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
