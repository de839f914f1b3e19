"""Step 4 of a batch, the record: the counts, the ``--report`` lines and stdout data in input order."""

from __future__ import annotations

from dataclasses import dataclass

from ..messages import os_error_text
from .jobs import Result, RunProblem, UsageProblem


@dataclass
class Summary:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    not_run: int = 0

    def line(self) -> str:
        return f"processed {self.processed}, failed {self.failed}, skipped {self.skipped}"


def open_report(path: str):
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageProblem(f"--report '{path}': {os_error_text(exc)}") from None


class OrderedOutput:
    """Writes each job's stdout data in input order, whatever order the jobs finish in."""

    def __init__(self, indices: list[int], stream):
        self.order = indices
        self.stream = stream
        self.position = 0
        self.ready: dict[int, bytes] = {}

    def done(self, result: Result) -> None:
        self.ready[result.index] = result.stdout
        while self.position < len(self.order) and self.order[self.position] in self.ready:
            data = self.ready.pop(self.order[self.position])
            self.position += 1
            if data:
                write_all(self.stream, data)


def write_all(stream, data: bytes) -> None:
    """Write every byte of ``data`` to ``stream``.

    A buffered stream may return a short count when the reader goes away
    (``| head``); loop so that the next write raises BrokenPipeError instead of
    the output being cut silently. Other failures (a full disk behind ``>``)
    stop the run with one line.
    """
    view = memoryview(data)
    try:
        while view:
            view = view[stream.write(view):]
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise RunProblem(f"stdout: {os_error_text(exc)}") from None
