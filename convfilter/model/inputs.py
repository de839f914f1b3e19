"""Images and arrays as a model's input: channels, size and value scale.

Images are read by :mod:`convfilter.io` as floats in [0, 1]; Keras' ``img_to_array`` gives
0-255 floats, the scale models are usually trained on (many begin with a ``Rescaling``
layer), so images are multiplied by ``scale`` (255 by default). ``.npy`` inputs are taken
as they are: no scaling, no channel conversion, no resizing.
"""

from __future__ import annotations

import numpy as np

from .graph import Model

DEFAULT_SCALE = 255.0
# ITU-R 601-2 luma, the weights Pillow's convert("L") uses (as Keras' grayscale loading)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def prepare(array: np.ndarray, model: Model, *, scale: float = DEFAULT_SCALE, raw: bool = False,
            resize: bool = False) -> np.ndarray:
    """An (H, W, C) float32 array as ``model``'s input.

    Parameters
    ----------
    array : (H, W, C) float32
        An image in [0, 1], or with ``raw=True`` an array taken as it is.
    scale : float
        Image values are multiplied by this (255: Keras' ``img_to_array``).
    raw : bool
        The array is model input already (a ``.npy``): only checked.
    resize : bool
        Resize an image to a fixed-size model's height and width (bilinear).

    Raises ValueError naming what does not fit and the option that helps.
    """
    height, width, channels = array.shape
    want = model.channels
    if want is not None and channels != want:
        if raw or not (channels == 3 and want == 1 or channels == 1 and want == 3):
            raise ValueError(f"the model takes {want} channel(s), the input has {channels}"
                             + ("" if raw else "; only gray and RGB images can be converted"))
        array = array @ LUMA[:, None] if want == 1 else np.repeat(array, 3, axis=2)
    fixed = model.fixed_size
    if fixed is not None and (height, width) != fixed:
        if raw or not resize:
            hint = "" if raw else "; add --resize to resize images to it"
            raise ValueError(f"the model takes {fixed[0]}x{fixed[1]} inputs, the input is {height}x{width}{hint}")
        array = resize_bilinear(array, fixed)
    if not raw:
        array = array * np.float32(scale)
    return np.ascontiguousarray(array, np.float32)


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) float32 resized to ``size`` (height, width), channel by channel, with Pillow."""
    from PIL import Image

    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, c]), mode="F")
                         .resize((size[1], size[0]), Image.Resampling.BILINEAR)) for c in range(array.shape[2])]
    return np.stack(planes, axis=2).astype(np.float32)
