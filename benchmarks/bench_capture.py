"""What keeping library stderr out of the terminal costs per file read.

    python benchmarks/bench_capture.py

``io.load`` redirects file descriptor 2 into a temporary file around every decode (see
``convfilter._stderr``). This reads a thumbnail (64x48 PNG, the case where a fixed cost per file
shows most) and a 640x427 JPEG, with the capture and with it replaced by a no-op, one read
each way in turn (which goes first alternates); it prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from convfilter import io as cfio

ROOT = Path(__file__).resolve().parent.parent


class _NoCapture(contextlib.nullcontext):
    def text(self) -> str:
        return ""


def one_read(path: str, capture) -> float:
    cfio.LibraryStderr = capture
    start = time.perf_counter()
    cfio.load(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=400, help="reads of each file, each way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        thumbnail = Path(folder) / "thumb.png"
        pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(thumbnail)
        photo = Path(folder) / "china.jpg"
        with Image.open(ROOT / "sample_images" / "china.jpg") as image:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
        photo.write_bytes(buffer.getvalue())
        capture = cfio.LibraryStderr
        for path in (thumbnail, photo):
            times: dict[str, list[float]] = {"capture": [], "none": []}
            try:
                for turn in range(args.reads):  # one read each, taking turns at going first
                    order = (("capture", capture), ("none", _NoCapture))
                    for name, kind in order if turn % 2 else order[::-1]:
                        times[name].append(one_read(str(path), kind))
            finally:
                cfio.LibraryStderr = capture
            with_capture, without = statistics.median(times["capture"]), statistics.median(times["none"])
            print(f"{path.name}: {with_capture * 1e6:.0f} us with the capture, {without * 1e6:.0f} us without, "
                  f"ratio {with_capture / without:.3f} (+{(with_capture - without) * 1e6:.0f} us)")

if __name__ == "__main__":
    main()
