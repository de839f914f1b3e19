"""Step 1 of a batch: turn files, folders, ``-`` and ``--from-list`` into jobs.

Folders give the images in them, in name order; files convfilter wrote are
left out unless asked.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field

from ..messages import STDIO as STDIN
from ..messages import os_error_text
from .jobs import NOT_AN_IMAGE, OUR_OUTPUT, BatchOptions, Job, Result, UsageProblem

IMAGE_EXTENSIONS = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".dib", ".gif", ".webp",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".npy",
})


@dataclass
class Expansion:
    """The jobs found, and inputs that failed before any work (e.g. an empty folder)."""

    jobs: list[Job]
    failures: list[Result]
    from_folders: bool  # any folder or list given: the run reports like a batch
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of files not taken


def read_list(path: str, stdin=None) -> list[str]:
    """Paths from ``--from-list``: one per line, or NUL-separated (``find -print0``)."""
    if path == STDIN:
        raw = (stdin if stdin is not None else sys.stdin.buffer).read()
    else:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise UsageProblem(f"--from-list '{path}': {os_error_text(exc)}") from None
    text = os.fsdecode(raw)
    entries = text.split("\0") if "\0" in text else text.splitlines()
    return [entry for entry in entries if entry.strip()]


def expand_inputs(arguments: list[str], options: BatchOptions, stdin=None) -> Expansion:
    """Jobs for files, folders and ``-`` (plus ``--from-list``), in the order given.

    A folder gives its images (known extensions, or content Pillow
    recognises) sorted by name, descending with ``recursive``; hidden files,
    non-images and (unless ``include_outputs``) files convfilter wrote are
    left out. A folder without images is a failed input. Files named
    explicitly are always taken.
    """
    from ..io import read_source

    listed = read_list(options.from_list, stdin) if options.from_list else []
    if (list(arguments) + listed).count(STDIN) + (options.from_list == STDIN) > 1:
        raise UsageProblem("stdin ('-' or --from-list -) can be used only once")
    if not arguments and not listed:
        raise UsageProblem("give at least one INPUT (a file, a folder or '-'), or --from-list")
    entries: list[tuple[str, str, bytes | None]] = []  # (source, subfolder, data)
    failures: list[Result] = []
    left_out: list[tuple[str, str]] = []
    from_folders = bool(options.from_list)
    for position, argument in enumerate(list(arguments) + listed):
        if argument == STDIN:
            entries.append((STDIN, "", read_source(STDIN, stdin)))
        elif os.path.isdir(argument):
            from_folders = True
            found, skipped = _images_in(argument, options)
            if not found:
                outputs_seen = sum(why == OUR_OUTPUT for _, why in skipped)
                failures.append(Result(-1, argument, "failed", error=_no_images(argument, options, outputs_seen)))
            entries.extend((path, sub, None) for path, sub in found)
            left_out.extend(skipped)
        elif position >= len(arguments) and os.path.isfile(argument) and (why := _unwanted(argument, options)):
            left_out.append((argument, why))  # a listed file is filtered as a folder's files are
        else:
            entries.append((argument, "", None))
    jobs = [Job(index, source, sub, data) for index, (source, sub, data) in enumerate(entries)]
    return Expansion(jobs, failures, from_folders, left_out)


def _images_in(folder: str, options: BatchOptions) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(path, subfolder) of the images under ``folder``, and (path, why) of the files left out
    (hidden files are not even looked at)."""
    found: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if options.recursive else []
        subfolder = os.path.relpath(top, folder)
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue
            why = _unwanted(path, options)
            if why:
                skipped.append((path, why))
            else:
                found.append((path, "" if subfolder == "." else subfolder))
    return found, skipped


def _unwanted(path: str, options: BatchOptions) -> str:
    """Why a file found in a folder or a list is not an input ('' when it is one): not an
    image, or convfilter's own output (unless outputs are wanted too)."""
    from ..io import written_by_convfilter

    if not _is_image(path):
        return NOT_AN_IMAGE
    if not options.include_outputs and written_by_convfilter(path):
        return OUR_OUTPUT
    return ""


def _no_images(folder: str, options: BatchOptions, outputs_seen: int) -> str:
    hints = []
    if not options.recursive and any(entry.is_dir() for entry in os.scandir(folder)):
        hints.append("-r looks in sub-folders")
    if outputs_seen:
        hints.append(f"{outputs_seen} files written by convfilter were left out (--include-outputs takes them)")
    return "; ".join(["no images in this folder"] + hints)


def _is_image(path: str) -> bool:
    """An image extension (see :func:`pillow_extensions`), or content Pillow recognises (a quick
    look at the header). A file with an image extension is an input even when it cannot be
    read: its failure is reported, never skipped in silence."""
    extension = os.path.splitext(path)[1].lower()
    if extension in IMAGE_EXTENSIONS or (extension and extension in pillow_extensions()):
        return True
    from PIL import Image

    from ..io import quiet_pillow

    try:
        with quiet_pillow(), Image.open(path):
            return True
    except Exception:  # Pillow raises many kinds for non-images; none of them matters here
        return False


@functools.lru_cache(maxsize=1)
def pillow_extensions() -> frozenset[str]:
    """Extensions that make a file in a folder an input besides :data:`IMAGE_EXTENSIONS`: every
    extension Pillow registers a reader for, but formats it only recognises (no decoder: GRIB,
    HDF5, WMF...) and the non-images it can open (MPEG video, PostScript through Ghostscript).
    Asked only for other extensions: loading all of Pillow's plugins takes tens of ms."""
    from PIL import Image, ImageFile

    Image.init()
    readable = set()
    for extension, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt in NON_IMAGE_FORMATS:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        readable.add(extension.lower())
    return frozenset(readable)


NON_IMAGE_FORMATS = frozenset({"MPEG", "EPS"})
