"""Reading images into float32 arrays and writing feature maps, atomically.

Images become (H, W, C) float32 in [0, 1], as in the book
(``load_sample_image(...) / 255``): 8-bit modes are divided by 255, 16-bit
modes by 65535, float images ("F") are kept as they are. ``.npy`` inputs
(raw maps from ``-f npy``) are read unscaled. EXIF orientation is applied.
Alpha is dropped, so RGBA becomes RGB and LA becomes L; palette images
become RGB; CMYK and YCbCr are converted to RGB; mode "1" becomes 0/1.
"""

from __future__ import annotations

import contextlib
import io as _io
import os
import re
import secrets
import sys
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps

from . import __version__, diagnosis, png
from ._stderr import LibraryStderr
from .formats import FORMATS
from .io_modes import channels_of_mode
from .messages import STDIN_NAME, STDIO
from .npy import MAGIC as NPY_MAGIC
from .npy import declared_shape
from .recipe import DEFAULT_MAX_PIXELS  # noqa: F401  (re-exported for library users)
from .scaling import normalize, to_pixels

SOFTWARE = f"convfilter {__version__}"
MARK_KEY = "convfilter"  # PNG text key (and TIFF description prefix) that marks a file as our output


class InputError(ValueError):
    """An input could not be read as an image or array.

    ``partial`` means the header was read and the pixel data failed (``--accept-truncated``
    may read it); ``plain`` is the reason in plain words and ``words`` the library's own
    (cut in the message, whole in ``detail``; see :mod:`convfilter.diagnosis`).
    """

    def __init__(self, message: str, *, partial: bool = False, plain: str = "", words: str = "",
                 detail: str = ""):
        super().__init__(message)
        self.partial, self.plain, self.words = partial, plain or message, words or message
        self.detail = detail or message  # the message with the library's words uncut


def set_max_pixels(limit: int) -> None:
    """Refuse inputs with more than ``limit`` pixels (0: no limit) from now on in this process.

    Sets ``PIL.Image.MAX_IMAGE_PIXELS``, which Pillow checks from the header before decoding;
    :func:`load` turns Pillow's warning (between 1x and 2x the limit) into a refusal as well,
    and applies the same limit to ``.npy`` inputs.
    """
    if limit < 0:
        raise ValueError(f"the pixel limit must be 0 (no limit) or more, not {limit}")
    Image.MAX_IMAGE_PIXELS = limit or None


def _check_pixels(pixels: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and pixels > limit:
        raise InputError(_too_many_pixels(pixels, limit))


def _too_many_pixels(pixels: int, limit: int) -> str:
    return (f"image has {pixels:,} pixels, more than the limit of {limit:,} "
            "(a decompression bomb?); raise it with --max-pixels N, or --max-pixels 0 for no limit")


def _bomb_message(exc: Exception) -> str:
    """Our refusal for Pillow's DecompressionBombError/Warning ("Image size (N pixels) ...")."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(match.group(1)) if match else 0
    return _too_many_pixels(pixels, Image.MAX_IMAGE_PIXELS or 0)


@dataclass
class Loaded:
    """An input, read: its samples as decoded, the name its outputs are named after, and what
    to tell about it (``warnings``).

    ``pixels`` is (H, W, C) uint8, uint16, int32 or float32, as the file holds
    them; the image in [0, 1] is ``pixels / scale`` (:attr:`array`). Keeping the
    decoded samples spares a large image its float32 copy (four times the
    bytes of 8-bit samples) where the filter can read them directly.
    """

    pixels: np.ndarray
    scale: float
    stem: str
    source: str
    raw: bool = False  # a .npy: values as they are, not an image's [0, 1]
    warnings: list[str] = field(default_factory=list)  # e.g. read truncated (--accept-truncated)

    @property
    def array(self) -> np.ndarray:
        """(H, W, C) float32 in [0, 1] (see the module docstring); a new array on each call."""
        return to_unit_range(self.pixels, self.scale)


def to_unit_range(pixels: np.ndarray, scale: float) -> np.ndarray:
    """``pixels / scale`` as C-contiguous float32: the one place samples become [0, 1] floats."""
    if pixels.dtype == np.float32 and scale == 1.0:
        return np.ascontiguousarray(pixels)
    return np.ascontiguousarray(np.asarray(pixels, dtype=np.float32) / np.float32(scale))


def read_source(source: str, stdin=None) -> bytes | None:
    """The bytes of ``-`` (stdin); None for a path (opened lazily by Pillow)."""
    if source != STDIO:
        return None
    stream = stdin if stdin is not None else _stdin_buffer()
    return stream.read()


def _stdin_buffer():
    return sys.stdin.buffer


def stem_of(source: str) -> str:
    """The name an input's outputs are named after: its file name without extension."""
    return STDIN_NAME if source == STDIO else os.path.splitext(os.path.basename(source))[0]


def name_of(source: str) -> str:
    """An input's whole file name (``{name}`` in output names): ``hopper.bmp``; ``stdin`` for ``-``."""
    return STDIN_NAME if source == STDIO else os.path.basename(source)


def load(source: str, data: bytes | None = None, check_size=None, *, accept_truncated: bool = False) -> Loaded:
    """Read ``source`` (a path, or ``-`` with its bytes in ``data``) as (H, W, C) float32.

    ``check_size(height, width, channels)``, if given, is called with the size the
    header declares before any pixel is decoded; it raises to refuse the input.
    Raises InputError (one line for the user) for anything wrong with the file, whatever
    Pillow or a plugin raised, and MemoryError when it does not fit in memory. With
    ``accept_truncated``, an image whose pixel data ends early (or fails) is decoded as far
    as it goes, and ``Loaded.warnings`` says so.
    """
    stem = stem_of(source)
    notes: list[str] = []
    if data is None and source == STDIO:
        data = read_source(source)
    try:
        if data is not None:
            if not data:
                raise InputError(f"{STDIN_NAME} is empty" if source == STDIO else "empty file")
            head = data[:6]
            stream = _io.BytesIO(data)
            pixels, scale = _read(stream, head, check_size, accept_truncated, notes)
        else:
            with open(source, "rb") as handle:
                head = handle.read(6)
                if not head:
                    raise InputError("empty file")
                handle.seek(0)
                pixels, scale = _read(handle, head, check_size, accept_truncated, notes)
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a folder, not an image") from None
    except PermissionError:
        raise InputError("permission denied") from None
    return Loaded(pixels, scale, stem, source, raw=head == NPY_MAGIC, warnings=notes)


def _read(handle, head: bytes, check_size, accept_truncated: bool, notes: list[str]) -> tuple[np.ndarray, float]:
    if head == NPY_MAGIC:
        return _load_npy(handle, check_size)
    return _load_image(handle, check_size, accept_truncated, notes)


def _load_npy(handle, check_size=None) -> tuple[np.ndarray, float]:
    try:
        _check_npy_header(handle, check_size)
        array = np.load(handle, allow_pickle=False)
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # numpy raises ValueError, EOFError, OSError... for bad files
        raise InputError(f"not a readable .npy array ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f".npy holds {array.dtype} values; expected numbers")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or 0 in array.shape:
        raise InputError(f".npy array has shape {array.shape}; expected (H, W) or (H, W, C)")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError(".npy array contains NaN or infinity")
    return array, 1.0


def _check_npy_header(handle, check_size=None) -> None:
    """Check an array's declared shape (pixel limit, ``check_size``) before numpy allocates it."""
    shape = declared_shape(handle)
    if shape is not None and len(shape) in (2, 3):
        _check_pixels(shape[0] * shape[1])
        if check_size is not None:
            check_size(shape[0], shape[1], shape[2] if len(shape) == 3 else 1)


_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _load_image(handle, check_size=None, accept_truncated=False, notes=None) -> tuple[np.ndarray, float]:
    """Decode an image; with ``accept_truncated``, a file whose pixel data fails is decoded again
    as far as its data goes (Pillow's ``LOAD_TRUNCATED_IMAGES``), with a note in ``notes``."""
    try:
        return _decode_image(handle, check_size, whole=True)
    except InputError as exc:
        if not (accept_truncated and exc.partial):
            raise
        handle.seek(0)
        decoded = _decode_image(handle, check_size, whole=False)
        if notes is not None:
            notes.append(f"{exc.plain}; read anyway as far as its data goes (--accept-truncated), the rest is "
                         f"filler ({exc.words})")
        return decoded


def _decode_image(handle, check_size, whole: bool) -> tuple[np.ndarray, float]:
    """Open, check and decode one image; every failure becomes an InputError (MemoryError stays)."""
    with LibraryStderr() as library, warnings.catch_warnings(), _truncated_images(not whole):
        # Pillow warns about metadata it skips in damaged files (several lines on stderr);
        # the image then decodes or fails with an error of its own, so stay quiet
        warnings.simplefilter("ignore")
        # Pillow only warns between 1x and 2x its pixel limit; we refuse there too
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(_bomb_message(exc)) from None
        except MemoryError:
            raise
        except Exception as exc:  # any plugin may raise anything for a hostile header
            raise _input_error(diagnosis.open_failure(handle, exc, library.text())) from None
        if check_size is not None:  # its refusal is the caller's, passed on as raised
            check_size(image.height, image.width, channels_of_mode(image.mode))
        try:
            image.load()
            # in place: without it Pillow returns a copy of the whole image even when it is upright
            ImageOps.exif_transpose(image, in_place=True)
            return image_samples(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(_bomb_message(exc)) from None
        except MemoryError:
            raise
        except Exception as exc:  # a decoder, a plugin or numpy: one message, whatever the class
            raise _input_error(diagnosis.decode_failure(image, exc, library.text(), hint=whole)) from None


def _input_error(found: "diagnosis.Diagnosis") -> InputError:
    return InputError(found.message, partial=found.partial, plain=found.plain, words=found.words,
                      detail=found.detail)


class _ThreadFlag:
    """Stands in for ``ImageFile.LOAD_TRUNCATED_IMAGES``: true only in a thread that asked.

    Pillow reads that module global (as a truth value) while decoding; setting it to True
    would let every image of the process through truncated, in every thread, until reset.
    Elsewhere it keeps the value it had before (a library user's own choice).
    """

    def __init__(self, default: bool):
        self.default = default
        self.local = threading.local()

    def __bool__(self) -> bool:
        return getattr(self.local, "on", self.default)

    def __repr__(self) -> str:
        return repr(bool(self))


_FLAG_LOCK = threading.Lock()


@contextlib.contextmanager
def _truncated_images(accept: bool):
    """Let Pillow decode a truncated image in this thread, for the duration of the block."""
    if not accept:
        yield
        return
    with _FLAG_LOCK:
        flag = ImageFile.LOAD_TRUNCATED_IMAGES
        if not isinstance(flag, _ThreadFlag):
            flag = ImageFile.LOAD_TRUNCATED_IMAGES = _ThreadFlag(bool(flag))
    flag.local.on = True
    try:
        yield
    finally:
        del flag.local.on


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping, if the system tells (Linux).

    The smaller of the kernel's ``MemAvailable`` and the room left under a cgroup
    (container) memory limit; None where neither is known.
    """
    limits = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as handle:
                text = handle.read().strip()
            with open(usage_file) as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            limits.append(max(int(text) - usage, 0))
    return min(limits) if limits else None


def image_to_array(image: Image.Image) -> np.ndarray:
    """A Pillow image as (H, W, C) float32 in [0, 1] (see the module docstring)."""
    return to_unit_range(*image_samples(image))


def image_samples(image: Image.Image) -> tuple[np.ndarray, float]:
    """A Pillow image's (H, W, C) samples (uint8, uint16, int32 or float32) and the divisor
    that maps them into [0, 1]; colour modes are converted as the module docstring says."""
    mode = image.mode
    if mode in _SCALE:
        return _asarray(image)[:, :, None], _SCALE[mode]
    if mode == "1":
        image = image.convert("L")
    elif mode == "LA" or mode == "La":
        image = image.getchannel(0)
    elif mode == "P" or mode == "PA":
        image = image.convert("RGBA").convert("RGB")
    elif mode not in ("L", "RGB"):
        image = image.convert("RGB")  # RGBA, RGBa, CMYK, YCbCr, LAB, HSV...
    samples = _asarray(image)
    return (samples[:, :, None] if samples.ndim == 2 else samples), 255.0


# Images larger than this are read out of Pillow a band of rows of about this size at a time
BAND_BYTES = 4 << 20


def _asarray(image: Image.Image) -> np.ndarray:
    """``np.asarray(image)``, without its transient copies for a large image.

    numpy reads a Pillow image through ``tobytes()``, which joins pieces of the whole image into
    one bytes object: two copies besides the image itself (about 3x an RGB photo's pixels). Read
    a band of rows at a time instead, into the one array returned.
    """
    width, height = image.size
    first = np.asarray(image.crop((0, 0, width, min(height, 1))))
    band = max(1, BAND_BYTES // max(first.nbytes, 1))
    if band >= height:
        return np.asarray(image)
    samples = np.empty((height, *first.shape[1:]), first.dtype)
    for top in range(0, height, band):
        bottom = min(top + band, height)
        samples[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    samples.flags.writeable = False  # as numpy's view of Pillow's bytes is
    return samples


# --- writing -------------------------------------------------------------------------------

EXTENSIONS = {f.name: f.extension for f in FORMATS.values()}  # format -> extension of its files
# format name -> encoder(data, normalization, metadata, colormap, png_level, threads, overwrite) -> bytes
_ENCODERS: dict = {}


def _encoder(fmt: str):
    """Register the encoder of the output format ``fmt`` (an entry of :data:`convfilter.formats.FORMATS`)."""
    def register(function):
        _ENCODERS[fmt] = function
        return function

    return register


def encode(data: np.ndarray, fmt: str, normalization: str = "minmax", metadata: dict | None = None,
           colormap: str = "gray", png_level: int = png.DEFAULT_LEVEL, threads: int = 1,
           overwrite: bool = False) -> bytes:
    """The file bytes of one (H, W, K) map in ``fmt``.

    ``png`` and ``png16`` are scaled for display by ``normalization`` (``png``
    also through ``colormap``, see :mod:`convfilter.colormap`) and compressed at
    zlib level ``png_level`` on up to ``threads`` threads; ``tiff`` (float32,
    one channel) and ``npy`` (float32, any K) keep the raw values. ``overwrite``
    lets the PNG scaling reuse ``data``'s memory (a caller done with the map).
    """
    if not FORMATS[fmt].stacked:
        channels = data.shape[2]
        if channels not in (1, 3):
            raise ValueError(f"a {fmt} image holds 1 or 3 channels, this map has {channels}; use -f npy")
    return _ENCODERS[fmt](data, normalization, metadata or {}, colormap, png_level, threads, overwrite)


@_encoder("npy")
def _encode_npy(data, normalization, metadata, colormap, png_level, threads, overwrite) -> bytes:
    buffer = _io.BytesIO()
    np.save(buffer, np.ascontiguousarray(data, np.float32), allow_pickle=False)
    return buffer.getvalue()


@_encoder("tiff")
def _encode_tiff(data, normalization, metadata, colormap, png_level, threads, overwrite) -> bytes:
    if data.shape[2] != 1:
        raise ValueError("float TIFF holds one channel; use -f npy for colour maps")
    image = Image.fromarray(np.ascontiguousarray(data[:, :, 0], np.float32), mode="F")
    description = MARK_KEY + " " + metadata.get(MARK_KEY, "{}")
    return _save(image, "TIFF", compression="tiff_deflate", software=SOFTWARE, description=description)


@_encoder("png16")
def _encode_png16(data, normalization, metadata, colormap, png_level, threads, overwrite) -> bytes:
    if data.shape[2] != 1:
        raise ValueError("16-bit PNG holds one channel here; use -f png or -f npy for colour maps")
    scaled = normalize(data, normalization, overwrite=overwrite)[:, :, 0]
    scaled *= np.float32(65535)
    return png_bytes(np.round(scaled, out=scaled).astype(np.uint16), metadata, png_level, threads)


@_encoder("png")
def _encode_png(data, normalization, metadata, colormap, png_level, threads, overwrite) -> bytes:
    return png_bytes(to_pixels(data, normalization, colormap, overwrite=overwrite), metadata, png_level, threads)


def png_bytes(pixels, metadata: dict | None = None, level: int = png.DEFAULT_LEVEL, threads: int = 1) -> bytes:
    """``pixels`` (an array, or a Pillow image) as PNG bytes with convfilter's Software tag and
    ``metadata`` as text chunks."""
    return png.encode(np.asarray(pixels), {"Software": SOFTWARE, **(metadata or {})}, level, threads)


def written_by_convfilter(path: str) -> bool:
    """Whether ``path`` is a file convfilter wrote (so a folder run does not re-filter it).

    Each output format records it where :data:`convfilter.formats.FORMATS` says:
    PNGs carry a ``convfilter`` text chunk and TIFFs an ImageDescription that
    starts with ``convfilter``. ``.npy`` arrays cannot carry a mark, and
    convfilter is what writes them, so every ``.npy`` counts as an output.
    Unreadable files are not outputs (they are reported when processed).
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    fmt = next((f for f in FORMATS.values() if head.startswith(f.magic)), None)
    if fmt is None:
        return False
    if fmt.mark is None:
        return True
    try:
        with quiet_pillow(), Image.open(path) as image:
            if fmt.mark == "text":
                return image.format == "PNG" and MARK_KEY in image.info
            description = image.tag_v2.get(270, "") if image.format == "TIFF" else ""
            return isinstance(description, str) and description.startswith(MARK_KEY)
    except Exception:  # a damaged file raises many kinds; it is not an output (processing reports it)
        return False


@contextlib.contextmanager
def quiet_pillow():
    """Silence Pillow's warnings about damaged metadata while only looking at a file.

    Looking a folder over must not print lines of its own on stderr (nor let libtiff
    print its own): only the input's processing reports a problem, as one ``Error:`` line.
    """
    with LibraryStderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = _io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_atomic(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename.

    A reader never sees a half-written file. The temporary name is chosen
    before the file is created, so an interruption at any point (Ctrl-C, a
    SIGTERM turned into an exception) can remove it: no ``.part`` file is left.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.part")
    try:
        # 0o666 less the umask: outputs get the usual permissions
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise


def _naming(exc: OSError, path: str) -> OSError:
    """The same error about ``path`` (not the hidden temporary file, or no file at all)."""
    return type(exc)(exc.errno, exc.strerror, path) if exc.errno else exc
