"""Whole-process time and peak memory on large photos: convfilter against the libvips command line.

    python benchmarks/bench_large.py [--rounds 3] [--sizes 6000x4000,8000x8000]

Makes noisy JPEG photos of each size in a temporary folder, then runs, in
alternating rounds, ``convfilter apply -k vertical PHOTO -o out.png`` and, when
``vips`` is on PATH, libvips doing the same job (gray, the 7x7 vertical line
kernel, an 8-bit PNG): ``vips colourspace`` -> ``vips conv`` -> ``vips cast`` ->
PNG. Prints the median seconds and the peak resident memory of each (the
largest process of the pipeline for vips), and their ratios. The Numba cache is
warmed first, so the figures are for a warm cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

VERTICAL_MASK = "7 7 1 0\n" + "\n".join(" ".join("1" if c == 3 else "0" for c in range(7)) for _ in range(7)) + "\n"


def make_photo(path: str, width: int, height: int) -> None:
    sample = os.path.join(os.path.dirname(__file__), "..", "sample_images", "china.jpg")
    image = Image.open(sample).convert("RGB").resize((width, height), Image.BICUBIC)
    noise = np.random.default_rng(0).integers(-6, 7, (height, width, 3))
    pixels = (np.asarray(image, np.int16) + noise).clip(0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def make_photo_in_child(path: str, width: int, height: int) -> None:
    # Linux keeps a process's peak RSS across fork and exec, so the benchmark itself stays small:
    # the photos are made in a process of their own
    code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import bench_large; " \
           f"bench_large.make_photo({path!r}, {width}, {height})"
    subprocess.run([sys.executable, "-c", code], check=True)


def timed(commands: list[list[str]], cwd: str) -> tuple[float, int]:
    """Seconds for the commands run one after another, and the largest peak RSS (bytes) among them."""
    start, peak = time.perf_counter(), 0
    for command in commands:
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            raise SystemExit(f"{' '.join(command)} failed: {process.stderr.read().decode()}")
        peak = max(peak, usage.ru_maxrss * 1024)
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="6000x4000,8000x8000")
    args = parser.parse_args()
    convfilter = [sys.executable, "-m", "convfilter"]
    vips = shutil.which("vips")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "vertical.mat"), "w") as mask:
            mask.write(VERTICAL_MASK)
        subprocess.run([*convfilter, "warmup"], check=True, capture_output=True)
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            photo = f"photo_{size}.jpg"
            make_photo_in_child(os.path.join(folder, photo), width, height)
            jobs = {"convfilter": [[*convfilter, "apply", "-k", "vertical", photo, "-o", "out.png"]]}
            if vips:
                jobs["libvips"] = [[vips, "colourspace", photo, "gray.v", "b-w"],
                                   [vips, "conv", "gray.v", "conv.v", "vertical.mat", "--precision", "float"],
                                   [vips, "cast", "conv.v", "out_vips.png", "uchar"]]
            results: dict[str, list[tuple[float, int]]] = {name: [] for name in jobs}
            for _ in range(args.rounds):
                for name, commands in jobs.items():
                    results[name].append(timed(commands, folder))
            print(f"{width}x{height} ({width * height / 1e6:.0f} MP), median of {args.rounds} rounds:")
            medians = {name: (statistics.median(t for t, _ in runs), max(m for _, m in runs))
                       for name, runs in results.items()}
            for name, (seconds, peak) in medians.items():
                print(f"  {name:10s} {seconds:6.2f} s  peak {peak / 1e6:6.0f} MB")
            if "libvips" in medians:
                (cs, cm), (vs, vm) = medians["convfilter"], medians["libvips"]
                print(f"  convfilter/libvips: time {cs / vs:.2f}x, memory {cm / vm:.1f}x")
        if not vips:
            print("vips is not on PATH (Debian: libvips-tools): convfilter figures only")


if __name__ == "__main__":
    main()
