"""Whole-process time and peak memory on large photos: convfilter against the libvips command line.

    python benchmarks/bench_large.py [--rounds 3] [--sizes 6000x4000,8000x8000] [--compare SRC]

Makes noisy JPEG photos of each size in a temporary folder, then runs, in
alternating rounds, ``convfilter apply -k vertical PHOTO -o out.png`` in its own
process (``CONVFILTER_SERVER=off``), the same command through a warm server
(started for the run in a runtime folder of its own, and stopped at the end;
see docs/server.md) and, when ``vips`` is on PATH, libvips doing the same job
(gray, the 7x7 vertical line kernel, an 8-bit PNG): ``vips colourspace`` ->
``vips conv`` -> ``vips cast`` -> PNG. Prints the median seconds and the peak
resident memory of each (the largest process of the pipeline for vips; for the
server, the client only: the work runs in a process forked from the server),
and the ratios to libvips. The Numba cache is warmed first, so the figures are
for a warm cache. Each round also checks that both ways wrote the same bytes.
``--compare SRC`` also runs, in its own process, the convfilter package found in
the folder SRC (another checkout, e.g. the last release) and checks that it wrote
the same bytes too.
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


def timed(commands: list[list[str]], cwd: str, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Seconds for the commands run one after another, and the largest peak RSS (bytes) among them."""
    start, peak = time.perf_counter(), 0
    for command in commands:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    parser.add_argument("--compare", metavar="SRC", help="a folder holding another convfilter package to run too")
    args = parser.parse_args()
    convfilter = [sys.executable, "-m", "convfilter"]
    vips = shutil.which("vips")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "vertical.mat"), "w") as mask:
            mask.write(VERTICAL_MASK)
        in_process = {**os.environ, "CONVFILTER_SERVER": "off"}
        runtime = os.path.join(folder, "runtime")
        os.mkdir(runtime, 0o700)
        served = {key: value for key, value in os.environ.items() if key != "CONVFILTER_SERVER"}
        served["XDG_RUNTIME_DIR"] = runtime  # a server of this run only, never the user's
        other = None
        if args.compare:
            other = {**in_process, "PYTHONPATH": os.path.abspath(args.compare)}
            subprocess.run([*convfilter, "warmup"], check=True, capture_output=True, env=other)
        subprocess.run([*convfilter, "warmup"], check=True, capture_output=True, env=in_process)
        subprocess.run([*convfilter, "server", "start"], check=True, capture_output=True, env=served)
        try:
            for size in args.sizes.split(","):
                run_size(size, args.rounds, folder, convfilter, vips, in_process, served, other)
        finally:
            subprocess.run([*convfilter, "server", "stop"], capture_output=True, env=served)
        if not vips:
            print("vips is not on PATH (Debian: libvips-tools): convfilter figures only")


def run_size(size: str, rounds: int, folder: str, convfilter: list[str], vips: str | None,
             in_process: dict[str, str], served: dict[str, str], other: dict[str, str] | None) -> None:
    width, height = map(int, size.split("x"))
    photo = f"photo_{size}.jpg"
    make_photo_in_child(os.path.join(folder, photo), width, height)
    jobs = {"convfilter": ([[*convfilter, "apply", "-k", "vertical", photo, "-o", "out.png"]], in_process),
            "server": ([[*convfilter, "apply", "-k", "vertical", photo, "-o", "out_server.png"]], served)}
    if other:
        jobs["compared"] = ([[*convfilter, "apply", "-k", "vertical", photo, "-o", "out_compared.png"]], other)
    if vips:
        jobs["libvips"] = ([[vips, "colourspace", photo, "gray.v", "b-w"],
                            [vips, "conv", "gray.v", "conv.v", "vertical.mat", "--precision", "float"],
                            [vips, "cast", "conv.v", "out_vips.png", "uchar"]], None)
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, (commands, env) in jobs.items():
            results[name].append(timed(commands, folder, env))
        with open(os.path.join(folder, "out.png"), "rb") as own:
            written = own.read()
        for name in ("server", "compared"):
            if name in jobs:
                with open(os.path.join(folder, f"out_{name}.png"), "rb") as theirs:
                    if theirs.read() != written:
                        raise SystemExit(f"{name} wrote other bytes than convfilter in its own process")
    print(f"{width}x{height} ({width * height / 1e6:.0f} MP), median of {rounds} rounds, load average "
          f"{os.getloadavg()[0]:.2f}:")
    medians = {name: (statistics.median(t for t, _ in runs), max(m for _, m in runs)) for name, runs in results.items()}
    for name, (seconds, peak) in medians.items():
        memory = "(client)     " if name == "server" else f"peak {peak / 1e6:4.0f} MB"
        ratio = f"  {seconds / medians['libvips'][0]:.2f}x libvips' time" if "libvips" in medians else ""
        print(f"  {name:10s} {seconds:6.2f} s  {memory}{ratio}")
    if "libvips" in medians:
        print(f"  convfilter/libvips memory: {medians['convfilter'][1] / medians['libvips'][1]:.1f}x")


if __name__ == "__main__":
    main()
