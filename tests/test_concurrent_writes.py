"""Two convfilter processes writing the same outputs into one folder at once: no corrupt file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

KERNELS = ["-k", "vertical", "-k", "sobel-x", "-k", "gaussian:9:2"]


def make_inputs(folder, count=8):
    rng = np.random.default_rng(11)
    names = []
    for index in range(count):
        name = f"in{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(folder / name)
        names.append(name)
    return names


def command(names, output):
    return [sys.executable, "-m", "convfilter", "apply", *KERNELS, *names, "-o", output]


@pytest.mark.slow
def test_two_writers_and_a_reader_never_see_a_corrupt_file(tmp_path):
    names = make_inputs(tmp_path)
    reference = subprocess.run(command(names, "reference/"), cwd=tmp_path, capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    expected = {p.name: p.read_bytes() for p in (tmp_path / "reference").iterdir()}
    assert len(expected) == len(names) * 3

    shared = tmp_path / "shared"
    shared.mkdir()
    seen, bad = [], []
    done = threading.Event()

    def read_while_writing():
        while not done.is_set():
            for entry in os.scandir(shared):
                if entry.name.startswith("."):
                    continue  # a temporary file, not an output yet
                try:
                    data = open(entry.path, "rb").read()
                except FileNotFoundError:
                    continue
                seen.append(entry.name)
                if data != expected[entry.name]:
                    bad.append(entry.name)

    reader = threading.Thread(target=read_while_writing)
    reader.start()
    try:
        for _ in range(3):
            # the second writer takes the inputs in reverse order, so they meet in the middle
            writers = [subprocess.Popen(command(order, "shared/"), cwd=tmp_path, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for order in (names, names[::-1])]
            results = [w.communicate(timeout=120) for w in writers]
            for writer, (_, stderr) in zip(writers, results):
                assert writer.returncode == 0, stderr
    finally:
        done.set()
        reader.join()
    assert not bad, f"{len(bad)} reads saw a partial or different file: {sorted(set(bad))[:5]}"
    assert len(seen) > 0
    assert sorted(os.listdir(shared)) == sorted(expected)  # no temporary files left
    for name, data in expected.items():
        assert (shared / name).read_bytes() == data
        with Image.open(shared / name) as image:
            image.load()
