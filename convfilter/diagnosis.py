"""Why Pillow could not read a file, in words a person can act on.

Pillow's messages are terse (``decoder error -2``), sometimes silent on the cause (``cannot
identify image file`` for a file a plugin recognised and then refused) and may come with lines a C
library printed. A :class:`Diagnosis` says what was recognised, what failed in plain words, and
then the library's own words, deduplicated and cut (whole in ``detail``).
Importing this module is cheap: Pillow loads only when a failure is diagnosed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .messages import shorten


@dataclass(frozen=True)
class Diagnosis:
    """Why a file could not be read: ``message`` for the user (the library's words cut, see
    :func:`~convfilter.messages.shorten`), ``detail`` the same with them whole, ``plain`` the
    reason in plain words, ``words`` the library's (cut); ``partial``: the header was read, the
    pixels failed."""

    message: str
    detail: str
    plain: str = ""
    words: str = ""
    partial: bool = False


UNKNOWN_FORMAT = "not an image Pillow can read (unknown format)"


def open_failure(handle, exc: BaseException, library_text: str = "") -> Diagnosis:
    """Why ``Image.open`` failed on ``handle``: which format the file looks like, and what went
    wrong in it. ``library_text`` is what libraries printed meanwhile."""
    from PIL import UnidentifiedImageError

    recognised = _recognised(handle)
    if recognised is None:
        if isinstance(exc, UnidentifiedImageError):
            return Diagnosis(UNKNOWN_FORMAT, UNKNOWN_FORMAT)
        return _failure("cannot read this file's header", exc, library_text)
    fmt, reason = recognised
    if isinstance(exc, UnidentifiedImageError):  # Pillow's message names no reason; the plugin's does
        exc = SyntaxError(reason) if reason else exc
    return _failure(f"recognised as {fmt} by its first bytes, but Pillow cannot open it", exc, library_text)


def decode_failure(image, exc: BaseException, library_text: str = "", hint: bool = True) -> Diagnosis:
    """Why the pixels of ``image`` (opened) could not be decoded; ``hint`` suggests
    ``--accept-truncated`` for a truncated file."""
    description = f"{image.format or 'an'} image"
    if image.width and image.height:  # a format stub knows no size
        description += f" ({image.mode}, {image.width}x{image.height})"
    return _failure(f"cannot decode this {description}", exc, library_text, partial=True, hint=hint)


def _recognised(handle) -> tuple[str, str] | None:
    """``(format, the plugin's complaint)`` for a file whose first bytes a Pillow plugin claims.

    Pillow's own message for a file every plugin refused is "cannot identify image file";
    asking the plugins that accept the signature again tells what they found wrong.
    """
    try:
        handle.seek(0)
        prefix = handle.read(16)
    except (OSError, ValueError):
        return None
    from PIL import Image

    Image.init()
    for fmt in list(Image.ID):
        factory, accept = Image.OPEN[fmt]
        try:
            verdict = accept(prefix) if accept else False
        except Exception:  # noqa: BLE001 - a plugin's check of 16 bytes: a refusal
            continue
        if isinstance(verdict, str):  # the plugin's own word: "unsupported variant ..."
            return fmt, verdict
        if not verdict:
            continue
        try:
            handle.seek(0)
            factory(handle, "")
        except MemoryError:
            return fmt, "not enough memory to read the header"
        except Exception as exc:  # noqa: BLE001 - what the plugin found wrong
            return fmt, _exception_words(exc)
        return fmt, ""
    return None


class _Explanation:
    """A library message, put into words a person can act on."""

    TRUNCATED = "the file is truncated: it ends before its image data does"
    DAMAGED = "the file is damaged or truncated: its data does not decode as its header says"
    TABLE = (  # the first match wins: the specific before the generic
        (r"cannot find loader for this (\w+) file",
         "Pillow recognises this {0} file but decodes it only with a plugin for the format, and none "
         "is installed"),
        (r"unimplemented|not implemented|unknown pixel format|unsupported|not supported|is not configured",
         "a variant of the format that this Pillow (or its libraries) cannot decode"),
        (r"unknown pixel mode", "its pixel layout (bits and samples per pixel) is one Pillow does not "
                                "support, or the header is damaged"),
        (r"more samples per pixel than can be decoded",
         "the header is damaged (it declares an impossible number of samples per pixel)"),
        (r"unknown compression method", "an unknown compression method (a damaged file, or a variant "
                                        "Pillow cannot decode)"),
        (r"too large|exceeds? (the )?limit", "a part of the file is too large to read safely (a damaged "
                                              "or hostile file?)"),
        (r"unable to seek to frame", "the file is damaged: its header lists a frame or page that is not there"),
        (r"image file is truncated|truncated file read|expected to read \d+ bytes but only got \d+|"
         r"not enough (image )?data|premature end|unexpected end|\beof\b", TRUNCATED),
        (r"decoder error -2|broken data stream|unrecognized data stream|buffer overrun|invalid argument|"
         r"errno 22|read error|corrupt|bad|invalid|cannot load", DAMAGED),
    )

    @classmethod
    def of(cls, exc: BaseException, words: str) -> str:
        if isinstance(exc, RecursionError):
            return "Pillow recursed too deeply reading it (a damaged or hostile file?)"
        for pattern, plain in cls.TABLE:
            match = re.search(pattern, words, re.IGNORECASE)
            if match:
                return plain.format(*match.groups())
        if isinstance(exc, NotImplementedError):
            return cls.TABLE[1][1]
        if isinstance(exc, (OSError, ValueError, SyntaxError, EOFError)):
            return cls.DAMAGED
        return "Pillow failed on it unexpectedly (a damaged file, or a bug in Pillow or one of its plugins)"


def _exception_words(exc: BaseException) -> str:
    """The library's own words for ``exc``; the class name too where it is not a usual decode error."""
    text = re.sub(r"\s*\(\d+ bytes not processed\)", "", " ".join(str(exc).split()))  # Pillow's count is noise
    if isinstance(exc, (OSError, ValueError, SyntaxError, EOFError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def library_words(*texts: str) -> str:
    """Library messages as one line: repeats dropped, runs of lines alike but for numbers counted.

    libtiff may print one line per bad tag (hundreds, differing in the tag number), or the
    same complaint three times; one of each kind, with a count, says as much.
    """
    kinds: dict[str, list] = {}
    seen = set()
    for text in texts:
        for line in re.split(r"[\r\n]+", text):
            line = re.sub(r"^\s*tempfile\.tif:\s*", "", " ".join(line.split()))  # Pillow's temporary name
            line = line.rstrip(".").strip()
            if line and line.lower() not in seen:
                seen.add(line.lower())
                kinds.setdefault(re.sub(r"\d+", "#", line.lower()), [line, 0])[1] += 1
    parts = [line if count == 1 else f"{line} (and {count - 1} more like it)" for line, count in kinds.values()]
    return "; ".join(parts)


def _failure(what: str, exc: BaseException, library_text: str, partial: bool = False,
             hint: bool = False) -> Diagnosis:
    words = library_words(_exception_words(exc), library_text)
    plain = _Explanation.of(exc, words)
    hint = "; --accept-truncated reads what is there" if hint and plain == _Explanation.TRUNCATED else ""
    return Diagnosis(f"{what}: {plain} ({shorten(words)}){hint}", f"{what}: {plain} ({words}){hint}", plain,
                     shorten(words), partial)

