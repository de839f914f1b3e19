"""SIGINT and SIGTERM in the middle of a multi-input run: prompt exit, no temporary or partial file.

(Parallel batches are covered with the batch mode.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_stops_promptly_and_leaves_only_whole_files(tmp_path, signum, code):
    rng = np.random.default_rng(4)
    names = []
    for index in range(40):
        name = f"in{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(tmp_path / name)
        names.append(name)
    # --jobs 1: the run's own process does the work and is the one interrupted; -v names each output
    process = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "--jobs", "1", "-v", "-k", "gaussian:9:2",
                                "-k", "sobel-x", *names, "-o", "out/"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert first.startswith("wrote "), first
    process.send_signal(signum)
    started = time.monotonic()
    rest = process.stderr.read()
    process.wait(timeout=30)
    assert time.monotonic() - started < 5
    assert process.returncode == code, rest
    # (click closes the terminal's ^C echo with an empty line before our last line)
    *_, summary, last = [line for line in rest.splitlines() if line]
    assert last == ("Error: interrupted" if signum == signal.SIGINT else "Error: terminated")
    assert "Traceback" not in rest
    written = sorted(os.listdir(tmp_path / "out"))
    assert 0 < len(written) < 2 * len(names)
    # the summary counts the inputs finished; an input cut short may have written its first map only
    processed = int(summary.split(",")[0].removeprefix("processed "))
    assert summary == f"processed {processed}, failed 0, skipped 0"
    assert len(written) in (2 * processed, 2 * processed + 1), (summary, written)
    assert not [name for name in written if name.startswith(".")], written
    for name in written:
        with Image.open(tmp_path / "out" / name) as image:
            image.load()
            assert image.size == (600, 400)
