"""What a batch says on stderr: messages by verbosity, around an optional progress bar."""

from __future__ import annotations

import sys
import time

from ..messages import display_name
from .jobs import Result


HANDFUL = 8  # a batch that writes at most this many files names each of them


class Console:
    """Messages on stderr, by verbosity, around an optional progress bar.

    Quiet (-1) shows errors only; normal (0) shows what a single input wrote,
    or a batch's progress bar (on a terminal) and summary, naming the files
    when there are at most ``HANDFUL`` (``outputs`` is how many are planned);
    verbose (1) names every file written or skipped.
    """

    def __init__(self, verbosity: int, batch: bool, total: int, stream=None, outputs: int = 0):
        self.stream = stream if stream is not None else sys.stderr
        self.verbosity = verbosity
        self.batch = batch
        # a run that writes a handful of files names them, as a single input does
        self.names_files = verbosity > 0 or (verbosity == 0 and (not batch or outputs <= HANDFUL))
        show_bar = batch and verbosity >= 0 and total > 1 and is_terminal(self.stream)
        self.progress = Progress(total, self.stream) if show_bar else None

    def error(self, source: str, message: str) -> None:
        self._say(f"Error: {display_name(source)}: {message}")

    def result(self, result: Result) -> None:
        if result.status == "failed":
            self.error(result.source, result.error or "failed")
        elif result.status == "skipped" and (self.verbosity > 0 or (self.verbosity == 0 and not self.batch)):
            for path in result.outputs:
                self._say(f"skipped (exists) {path}")
        elif result.status == "processed" and self.names_files:
            for path in result.outputs:
                self._say(f"wrote {path}")
        if self.verbosity >= 0:  # not with -q; the --report has them too
            for warning in result.warnings:
                self._say(f"Warning: {display_name(result.source)}: {warning}")
        if self.progress is not None:
            self.progress.advance()

    def note(self, text: str) -> None:
        if self.verbosity >= 0:
            self._say(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.clear()
            self.progress = None

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.clear()
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.progress is not None:
            self.progress.draw()


def is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line progress bar with count, rate and ETA, redrawn at most 10 times a second."""

    def __init__(self, total: int, stream, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.done = 0
        self.start = time.monotonic()
        self.last_draw = 0.0

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last_draw >= 0.1 or self.done == self.total:
            self.draw(now)

    def draw(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.last_draw = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        filled = self.width * self.done // max(self.total, 1)
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"{rate:.1f}/s ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()
