"""Step 1 of a batch: turn files, folders, ``-`` and ``--from-list`` into jobs.

Folders give the images in them, in name order; files convfilter wrote are
left out unless asked.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ..messages import STDIO as STDIN
from ..messages import os_error_text
from .jobs import BatchOptions, Job, Result, UsageProblem

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
    from_folders = bool(options.from_list)
    for position, argument in enumerate(list(arguments) + listed):
        if argument == STDIN:
            entries.append((STDIN, "", read_source(STDIN, stdin)))
        elif os.path.isdir(argument):
            from_folders = True
            found, outputs_seen = _images_in(argument, options)
            if not found:
                failures.append(Result(-1, argument, "failed", error=_no_images(argument, options, outputs_seen)))
            entries.extend((path, sub, None) for path, sub in found)
        elif position >= len(arguments) and os.path.isfile(argument) and not _wanted(argument, options):
            continue  # a listed file is filtered as a folder's files are
        else:
            entries.append((argument, "", None))
    jobs = [Job(index, source, sub, data) for index, (source, sub, data) in enumerate(entries)]
    return Expansion(jobs, failures, from_folders)


def _images_in(folder: str, options: BatchOptions) -> tuple[list[tuple[str, str]], int]:
    """(path, subfolder) of the images under ``folder``, and how many of our outputs were left out."""
    from ..io import written_by_convfilter

    found: list[tuple[str, str]] = []
    outputs_seen = 0
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if options.recursive else []
        subfolder = os.path.relpath(top, folder)
        for name in sorted(files):
            path = os.path.join(top, name)
            if name.startswith(".") or not os.path.isfile(path) or not _is_image(path):
                continue
            if not options.include_outputs and written_by_convfilter(path):
                outputs_seen += 1
                continue
            found.append((path, "" if subfolder == "." else subfolder))
    return found, outputs_seen


def _wanted(path: str, options: BatchOptions) -> bool:
    """An image that is not convfilter's own output (unless outputs are wanted too)."""
    from ..io import written_by_convfilter

    if not _is_image(path):
        return False
    return options.include_outputs or not written_by_convfilter(path)


def _no_images(folder: str, options: BatchOptions, outputs_seen: int) -> str:
    hints = []
    if not options.recursive and any(entry.is_dir() for entry in os.scandir(folder)):
        hints.append("-r looks in sub-folders")
    if outputs_seen:
        hints.append(f"{outputs_seen} files written by convfilter were left out (--include-outputs takes them)")
    return "; ".join(["no images in this folder"] + hints)


def _is_image(path: str) -> bool:
    """A known image extension, or content Pillow recognises (a quick look at the header)."""
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return True
    from PIL import Image

    from ..io import quiet_pillow

    try:
        with quiet_pillow(), Image.open(path):
            return True
    except Exception:  # Pillow raises many kinds for non-images; none of them matters here
        return False
