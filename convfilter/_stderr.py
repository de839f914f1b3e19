"""Keeping what C libraries print on stderr out of the terminal, and in the error message.

Importing this module is cheap (standard library only), so that the quick commands can use it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

from ._signals import signals_held


class LibraryStderr:
    """Collects what C libraries (libtiff...) write to file descriptor 2 while an image is read.

    Their lines name no file and would break the one ``Error: FILE: reason`` line per failure:
    the reader folds them into its message, or drops them when the image reads. The descriptor
    is process-wide, so the capture is shared: the first reader in redirects fd 2 into a
    temporary file, the last one out restores it, and each reader gets the text written while
    it was in. In a process that reads in several threads at once (a Dask worker), a reader may
    therefore get a neighbour's lines too; one that reads alone (the CLI, a worker process)
    gets exactly its own. The temporary file is made once per process and emptied when the
    last reader leaves (making one per read cost more than decoding a thumbnail).
    """

    _lock = threading.Lock()
    _users = 0
    _saved: int | None = None
    _sink = None
    LIMIT = 1 << 16  # bytes of library text kept per read (fuzzed files can print megabytes)

    def __init__(self):
        self._start: int | None = None
        self._final: str | None = None

    def __enter__(self) -> "LibraryStderr":
        cls = type(self)
        entered = False
        try:
            with signals_held(), cls._lock:
                if cls._users == 0:
                    cls._redirect()
                cls._users += 1
                entered = True
                self._start = cls._position()
        except BaseException:  # e.g. the Ctrl-C held back above, raised as the block ends
            if entered:  # ``with`` will not call __exit__ when __enter__ raises: leave here
                self.__exit__(None, None, None)
            raise
        return self

    def text(self) -> str:
        """What was written to the descriptor since this reader came in (until it left)."""
        if self._final is not None:
            return self._final
        with type(self)._lock:
            return self._read()

    def _read(self) -> str:
        cls = type(self)
        if cls._sink is None or self._start is None:
            return ""
        try:
            sys.stderr.flush()  # Python's own lines (Pillow logs some) belong to the capture too
        except (AttributeError, OSError, ValueError):
            pass
        end = cls._position()
        if end == self._start:
            return ""
        data = os.pread(cls._sink.fileno(), min(end - self._start, self.LIMIT), self._start)
        return data.decode("utf-8", "replace")

    def __exit__(self, *exc_info) -> None:
        cls = type(self)
        with signals_held(), cls._lock:
            try:
                self._final = self._read()
            finally:  # whatever reading the text raised, the descriptor is given back
                cls._users -= 1
                if cls._users == 0:
                    cls._restore()

    @classmethod
    def _position(cls) -> int | None:
        return None if cls._sink is None else os.lseek(cls._sink.fileno(), 0, os.SEEK_END)

    @classmethod
    def _redirect(cls) -> None:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            cls._saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep clean
            return
        try:
            if cls._sink is None:
                cls._sink = tempfile.TemporaryFile()
            target = cls._sink.fileno()
        except OSError:  # no temporary folder: drop the text rather than let it through
            cls._sink, target = None, os.open(os.devnull, os.O_WRONLY)
        os.dup2(target, 2)
        if cls._sink is None:
            os.close(target)

    @classmethod
    def _restore(cls) -> None:
        if cls._saved is None:
            return
        os.dup2(cls._saved, 2)
        os.close(cls._saved)
        cls._saved = None
        if cls._sink is not None and cls._position():  # emptied for the next reader (it stays open)
            os.ftruncate(cls._sink.fileno(), 0)
            os.lseek(cls._sink.fileno(), 0, os.SEEK_SET)

    @classmethod
    def give_back(cls) -> None:
        """Give fd 2 back however the readers left it. A signal's exception can be raised at the
        first instruction of :meth:`__exit__`, before it holds signals back: that reader never
        leaves, and what the process says afterwards ("Error: interrupted") would go into the
        capture file. The command line calls this before its last words; no reader runs then."""
        cls._users = 0
        cls._restore()

    @classmethod
    def _after_fork(cls) -> None:
        cls._lock = threading.Lock()  # a lock held by another thread at fork time would never be freed
        if cls._users == 0 and cls._sink is not None:  # the parent's file (and offset): make our own
            cls._sink.close()
            cls._sink = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=LibraryStderr._after_fork)
