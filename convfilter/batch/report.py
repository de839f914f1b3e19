"""Step 4 of a batch, the record: the counts, the ``--report`` lines and stdout data in input order."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..messages import os_error_text
from .jobs import NOT_AN_IMAGE, OUR_OUTPUT, Result, RunProblem, UsageProblem


@dataclass
class Summary:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    not_run: int = 0
    left_out: dict[str, int] = field(default_factory=dict)  # files of folders and lists not taken, by why

    def line(self) -> str:
        counts = f"processed {self.processed}, failed {self.failed}, skipped {self.skipped}"
        if not self.left_out:
            return counts
        kinds = {NOT_AN_IMAGE: ("non-image file", "non-image files"),
                 OUR_OUTPUT: ("file written by convfilter", "files written by convfilter")}
        parts = []
        for why, count in sorted(self.left_out.items()):
            one, many = kinds[why]
            parts.append(f"{count} {one if count == 1 else many}")
        return f"{counts}; left out {' and '.join(parts)}"


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
