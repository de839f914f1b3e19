"""Batch throughput: convfilter on a folder against ImageMagick ``mogrify``, side by side.

Both do the same work per image: decode a JPEG, convert it to gray, correlate
it with the book's 7x7 vertical line kernel and write a gray PNG. Each round
runs both tools (alternating which goes first) on a fresh output folder; the
figures are medians over the rounds, in images per second, whole processes
included (start-up, reading, writing).

A second part measures what one process pays per file: convfilter on one
image against convfilter on the whole folder with ``--jobs 1``. The
difference over the extra files is the cost of a file once the process is up;
the rest is start-up, paid once per run rather than once per file.

    python benchmarks/bench_batch.py                    # 100 copies of the samples
    python benchmarks/bench_batch.py --copies 200 --size 320x214 --rounds 5

Needs ImageMagick (``apt-get install imagemagick``) for the comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from convfilter.system import usable_cpus

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
VERTICAL_7 = "7x7: " + ",".join("1" if col == 3 else "0" for row in range(7) for col in range(7))


def make_folder(folder: Path, copies: int, size: tuple[int, int] | None) -> None:
    """``copies`` JPEGs cycling through the sample images, resized to ``size`` (W, H) if given."""
    folder.mkdir(parents=True)
    sources = sorted(SAMPLES.glob("*.jpg"))
    for index in range(copies):
        source = sources[index % len(sources)]
        if size is None:
            shutil.copyfile(source, folder / f"img{index:05d}.jpg")
        else:
            with Image.open(source) as image:
                image.convert("RGB").resize(size).save(folder / f"img{index:05d}.jpg", quality=90)


@contextlib.contextmanager
def private_server(root: Path):
    """The convfilter commands run inside get a server of their own (a runtime folder in
    ``root``, never the user's), stopped at the end: the benchmark leaves nothing running."""
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700)
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield
    finally:
        subprocess.run([sys.executable, "-m", "convfilter", "server", "stop"], capture_output=True)
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr.decode()}")
    return seconds


def convfilter_command(inputs: list[str], out: Path, jobs: int | None) -> list[str]:
    command = [sys.executable, "-m", "convfilter", "apply", "-k", "vertical", "--channels", "gray",
               *inputs, "-o", str(out), "-q"]
    return command + (["--jobs", str(jobs)] if jobs else [])


def mogrify_command(folder: Path, out: Path) -> list[str]:
    images = sorted(str(p) for p in folder.glob("*.jpg"))
    return ["mogrify", "-path", str(out), "-format", "png", "-colorspace", "gray",
            "-define", "convolve:scale=!", "-morphology", "Correlate", VERTICAL_7, *images]


def fresh(root: Path, name: str) -> Path:
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=100, help="images in the folder (default 100)")
    parser.add_argument("--size", help="resize the copies to WxH (default: the samples' 640x427)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each tool (default 3)")
    parser.add_argument("--jobs", type=int, default=None, help="convfilter --jobs (default: its own)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    has_mogrify = shutil.which("mogrify") is not None
    cpus = usable_cpus()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp, private_server(Path(tmp)):
        root = Path(tmp)
        folder = root / "images"
        make_folder(folder, args.copies, size)
        with Image.open(next(folder.iterdir())) as first:
            shape = f"{first.width}x{first.height}"
        print(f"{args.copies} JPEGs of {shape}, 7x7 correlation to gray PNG, {cpus} usable CPUs, "
              f"medians of {args.rounds} rounds; load average before: {os.getloadavg()[0]:.1f}")

        timed(convfilter_command([str(folder / "img00000.jpg")], fresh(root, "warm"), 1))  # Numba cache
        times: dict[str, list[float]] = {"convfilter": [], "mogrify": []}
        for round_ in range(args.rounds):
            order = ["convfilter", "mogrify"] if round_ % 2 == 0 else ["mogrify", "convfilter"]
            for tool in order:
                out = fresh(root, f"out-{tool}")
                if tool == "convfilter":
                    times[tool].append(timed(convfilter_command([str(folder)], out, args.jobs)))
                elif has_mogrify:
                    times[tool].append(timed(mogrify_command(folder, out)))
        jobs_label = f"--jobs {args.jobs}" if args.jobs else f"--jobs default ({cpus})"
        rate = {tool: args.copies / statistics.median(t) for tool, t in times.items() if t}
        print("| tool | seconds | images/s |\n| --- | --- | --- |")
        for tool, label in (("convfilter", f"convfilter {jobs_label}"), ("mogrify", "ImageMagick mogrify")):
            if tool in rate:
                print(f"| {label} | {statistics.median(times[tool]):.2f} | {rate[tool]:.1f} |")
        if "mogrify" in rate:
            print(f"ratio convfilter / mogrify: {rate['convfilter'] / rate['mogrify']:.2f}x")
        else:
            print("mogrify not found: install ImageMagick for the comparison")

        one, many = [], []
        for _ in range(args.rounds):
            one.append(timed(convfilter_command([str(folder / "img00000.jpg")], fresh(root, "one"), 1)))
            many.append(timed(convfilter_command([str(folder)], fresh(root, "many"), 1)))
        t_one, t_many = statistics.median(one), statistics.median(many)
        per_file = (t_many - t_one) / (args.copies - 1)
        print(f"one process, --jobs 1: 1 image {t_one:.2f} s, {args.copies} images {t_many:.2f} s: "
              f"{per_file * 1000:.0f} ms per further file, start-up about {(t_one - per_file) * 1000:.0f} ms "
              f"paid once")
        print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine slows "
              "the parallel run most)")


if __name__ == "__main__":
    main()
