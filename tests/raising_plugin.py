"""A Pillow plugin for tests that fails the way a buggy or hostile decoder may: with any exception.

A ``.cfraise`` file is one line, ``CFRAISE <exception class> <open|load> [message]``; the plugin
raises that exception while Pillow opens the file, or while it loads the pixels. RecursionError
is a real runaway recursion; C-level output is a real write to file descriptor 2. Import this
module (or call :func:`register`) in every process that decodes: the CLI process, forked worker
processes inherit it, Dask workers need ``client.run(register)``.
"""

from __future__ import annotations

import builtins
import os

from PIL import Image, ImageFile

FORMAT = "CFRAISE"
MAGIC = b"CFRAISE "


def content(exception: str, stage: str = "load", message: str = "") -> bytes:
    return MAGIC + f"{exception} {stage} {message}".strip().encode() + b"\n"


def _fail(exception: str, message: str) -> None:
    if exception == "RecursionError":
        def deeper(depth: int) -> int:
            return deeper(depth + 1) + 1

        deeper(0)
    if exception == "StderrThenOSError":  # a C library's complaint on fd 2, then Pillow's error
        os.write(2, f"cfraise: {message}\n".encode())
        raise OSError("decoder error -2")
    raise getattr(builtins, exception)(message)


class RaisingImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "fails on purpose (tests)"

    def _open(self) -> None:
        words = self.fp.read(1 << 16).decode().split(maxsplit=3)[1:]
        self._exception, self._stage = words[0], words[1]
        self._message = words[2].strip() if len(words) > 2 else ""
        if self._stage == "open":
            _fail(self._exception, self._message)
        self._mode = "L"
        self._size = (8, 6)
        self.tile = []

    def load(self):
        if self._stage == "load":
            _fail(self._exception, self._message)
        return super().load()


def register() -> None:
    Image.register_open(FORMAT, RaisingImageFile, lambda prefix: prefix.startswith(MAGIC))
    Image.register_extension(FORMAT, ".cfraise")


register()
