"""Read an input's size without decoding its pixels (for ``convfilter shape``)."""

from __future__ import annotations

from .io_modes import channels_of_mode
from .messages import os_error_text
from .npy import MAGIC as NPY_MAGIC
from .npy import declared_shape

_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(path: str) -> tuple[int, int, int]:
    """``(height, width, channels)`` as ``convfilter apply`` will see the input."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise ValueError(os_error_text(exc)) from None
    if head == NPY_MAGIC:
        try:
            shape = declared_shape(path)
        except Exception as exc:
            raise ValueError(f"not a readable .npy array ({exc})") from None
        if len(shape) not in (2, 3):
            raise ValueError(f".npy array has shape {shape}; expected (H, W) or (H, W, C)")
        return shape[0], shape[1], shape[2] if len(shape) == 3 else 1
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged metadata: only the size matters here
            Image.MAX_IMAGE_PIXELS = None  # nothing is decoded, so any declared size can be shown
            with Image.open(path) as image:
                width, height = image.size
                # PNG's getexif() decodes the whole image to look for an eXIf chunk after the
                # pixels; use only one that comes before them
                png_without_exif = image.format == "PNG" and "exif" not in image.info
                orientation = None if png_without_exif else image.getexif().get(0x0112)
                mode = image.mode
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read (unknown format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read image header: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width, channels_of_mode(mode)
