"""The output formats convfilter writes: one table, everything else derived from it.

Each :class:`OutputFormat` says what ``-f NAME`` writes: the extension of its
files, the ``-o`` extensions that choose it, what it keeps of the values, and
how a file of it says convfilter wrote it (so a folder run leaves its own
outputs alone). ``--help``, the ``-o`` checks and the file names come from
here; the encoder of each format is in :mod:`convfilter.io`, registered under
the format's name. Adding a format is one entry here plus its encoder.

Pure Python (no numpy), so that ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFormat:
    """One value of ``-f``.

    ``extension`` names the files written; ``suffixes`` are the ``-o``
    extensions that choose this format (none: only ``-f`` does). ``raw`` keeps
    the float32 values (no ``--normalize``); ``drawn`` is an 8-bit picture
    that ``--colormap`` and ``--montage`` can draw; ``stacked`` holds all maps
    of an input in one file. ``magic`` starts every file of it; ``mark`` is
    where the file records that convfilter wrote it (``text``: a PNG text
    chunk, ``description``: the TIFF ImageDescription; None: every such file
    counts as convfilter's).
    """

    name: str
    extension: str
    suffixes: tuple[str, ...]
    summary: str
    magic: tuple[bytes, ...]
    mark: str | None
    raw: bool = False
    drawn: bool = False
    stacked: bool = False

    def help(self) -> str:
        return f"{self.name} ({self.summary})" if self.summary else self.name


FORMATS = {f.name: f for f in (
    OutputFormat("png", "png", (".png",), "8-bit", (b"\x89PNG",), "text", drawn=True),
    OutputFormat("png16", "png", (), "", (b"\x89PNG",), "text"),
    OutputFormat("tiff", "tif", (".tif", ".tiff"), "raw float32", (b"II*\x00", b"MM\x00*"), "description",
                 raw=True),
    OutputFormat("npy", "npy", (".npy",), "raw float32 maps, (H, W, F)", (b"\x93NUMPY",), None, raw=True,
                 stacked=True),
)}
DEFAULT_FORMAT = "png"
FORMAT_OF_SUFFIX = {suffix: f.name for f in FORMATS.values() for suffix in f.suffixes}


def _spoken_list(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1] if len(items) > 1 else "".join(items)


def format_help() -> str:
    """The ``-f`` option's help text."""
    return (f"{_spoken_list([f.help() for f in FORMATS.values()])}. Default: from the output's extension, "
            f"else {DEFAULT_FORMAT}.")


def written_extensions() -> str:
    """The extensions convfilter writes, for messages: ``.png, .tif or .npy``."""
    return _spoken_list(list(dict.fromkeys(f".{f.extension}" for f in FORMATS.values())))

