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

    from PIL import Image

    from ._stderr import LibraryStderr

    limit = Image.MAX_IMAGE_PIXELS
    try:
        with LibraryStderr() as library, warnings.catch_warnings():  # libtiff's lines stay off the terminal
            warnings.simplefilter("ignore")  # damaged metadata: only the size matters here
            Image.MAX_IMAGE_PIXELS = None  # nothing is decoded, so any declared size can be shown
            try:
                with Image.open(path) as image:
                    width, height = image.size
                    # PNG's getexif() decodes the whole image to look for an eXIf chunk after the
                    # pixels; use only one that comes before them
                    png_without_exif = image.format == "PNG" and "exif" not in image.info
                    orientation = None if png_without_exif else image.getexif().get(0x0112)
                    mode = image.mode
            except MemoryError:
                raise ValueError("not enough memory to read its header") from None
            except Exception as exc:  # noqa: BLE001 - a plugin may raise anything for a hostile header
                raise ValueError(_why(path, exc, library)) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return height, width, channels_of_mode(mode)


def _why(path: str, exc: BaseException, library) -> str:
    """What ``apply`` says about a header Pillow cannot open (see :mod:`convfilter.diagnosis`)."""
    from .diagnosis import open_failure

    try:
        with open(path, "rb") as handle:
            return open_failure(handle, exc, library.text()).message
    except OSError as error:  # the file went away meanwhile
        return (error.strerror or str(error)).lower()
