"""The cost of each border mode against TensorFlow's zero padding, side by side in one run.

Every workload runs ``conv2d`` with SAME padding on the same arrays once per border (zero,
reflect, symmetric, edge), plus the TensorFlow way of getting a mirror border, ``pad`` with
REFLECT then ``conv2d`` with VALID, in alternating rounds (the order rotates every round, so
drift on a shared machine hits all alike). The table gives each median and its ratio to zero
padding: the border lives in the padded copy, so each mode should cost about what zero does
on every path (direct, separable, channel sum, and the one-channel separable path, which reads
the image in place with zeros and needs the padded copy for the other borders).

    python benchmarks/bench_borders.py [--rounds 31] [--threads 1]

One thread by default: on a shared machine a second thread measures the neighbours more than
the border. Each sample repeats the call for about 50 ms (at least 3 times).

Timings on a shared machine move between runs: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import convfilter
from convfilter import ops
from convfilter.geometry import axis
from convfilter.kernels import gaussian_1d, horizontal, vertical

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
MODES = ("CONSTANT", "REFLECT", "SYMMETRIC", "EDGE")


def book_images() -> np.ndarray:
    images = np.stack([np.asarray(Image.open(SAMPLES / f"{n}.jpg")) for n in ("china", "flower")])
    return (images / 255).astype(np.float32)


def workloads(rng):
    """(name, path, x, w): the same shapes for every border."""
    images = book_images()
    bank = np.zeros((7, 7, 3, 2), np.float32)
    bank[:, :, :, 0] = np.asarray(vertical(), np.float32)[:, :, None]
    bank[:, :, :, 1] = np.asarray(horizontal(), np.float32)[:, :, None]
    g9, g31 = gaussian_1d(9, 2.0), gaussian_1d(31, 5.0)
    colour = np.ascontiguousarray(images[:1].transpose(3, 1, 2, 0))  # --channels each: (3, H, W, 1)
    return [
        ("book bank 2x427x640x3 * 7x7x3x2", "channel sum + separable", images, bank),
        ("427x640x3 * dense 3x3x3x32", "direct", images[:1], rng.standard_normal((3, 3, 3, 32)).astype(np.float32)),
        ("3x427x640x1 * gaussian 9x9", "separable, one channel", colour,
         np.outer(g9, g9).astype(np.float32)[:, :, None, None]),
        ("1x1024x1024x1 * gaussian 31x31", "separable, one channel",
         rng.random((1, 1024, 1024, 1), np.float32), np.outer(g31, g31).astype(np.float32)[:, :, None, None]),
    ]


def timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def same_pads(x, w):
    return tuple((g.pad_before, g.pad_after) for g in (axis(x.shape[1], w.shape[0]), axis(x.shape[2], w.shape[1])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31, help="alternating rounds per workload (default 31)")
    parser.add_argument("--threads", type=int, default=1, help="threads per call (default 1)")
    args = parser.parse_args(argv)
    ops.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"# convfilter {convfilter.__version__}, {ops.get_num_threads()} threads, {args.rounds} rounds; "
          "median ms (ratio to zero padding)")
    print("| workload | path | zero | reflect | symmetric | edge | pad(REFLECT) + VALID |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, path, x, w in workloads(rng):
        pads = same_pads(x, w)
        calls = {mode: (lambda mode=mode: ops.conv2d(x, w, padding="SAME", border=mode)) for mode in MODES}
        calls["pad+valid"] = lambda: ops.conv2d(convfilter.pad(x, pads, "REFLECT"), w, padding="VALID")
        results = {key: call() for key, call in calls.items()}  # warm-up (and compile), then a check
        if np.abs(results["pad+valid"] - results["REFLECT"]).max() > 1e-5:
            raise AssertionError(f"{name}: the fused REFLECT border differs from pad + VALID")
        fastest = min(timed(calls["CONSTANT"]) for _ in range(5))
        repeat = max(3, int(0.05 / fastest))
        times = {key: [] for key in calls}
        keys = list(calls)
        for r in range(args.rounds):
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                for _ in range(repeat):
                    calls[key]()
                times[key].append((time.perf_counter() - t0) / repeat)
        medians = {key: statistics.median(values) * 1e3 for key, values in times.items()}
        zero = medians["CONSTANT"]
        cells = [f"{medians['CONSTANT']:.1f}"] + [f"{medians[k]:.1f} ({medians[k] / zero:.2f})" for k in keys[1:]]
        print(f"| {name} | {path} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
