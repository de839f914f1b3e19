"""convfilter's kernels against OpenCV, scipy.ndimage and (if installed) TensorFlow, in one run.

Every peer gets the same float32 NHWC arrays and computes the same numbers
(TensorFlow's semantics); the table shows each median after warm-up, the
ratio peer / convfilter (above 1: convfilter is faster) and the largest
absolute difference from convfilter's result, so a fast wrong answer shows.

    pip install -e '.[bench]' && python benchmarks/bench_kernels.py

Timings on a shared machine move between runs: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import convfilter
from convfilter.kernels import gaussian_1d, horizontal, vertical

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"

try:
    import cv2
except ImportError:  # the bench extra installs it; still run what we can
    cv2 = None
try:
    import scipy.ndimage as ndi
except ImportError:
    ndi = None
try:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
except ImportError:
    tf = None


def median_seconds(fn, min_repeats: int, budget: float) -> float:
    """Median wall time of ``fn()`` after one warm-up call: at least ``min_repeats`` runs, more
    while the total stays under ``budget`` seconds (at most 50)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start < budget and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- inputs ----------------------------------------------------------------------------------


def book_images() -> np.ndarray:
    images = np.stack([np.asarray(Image.open(SAMPLES / f"{n}.jpg")) for n in ("china", "flower")])
    return (images / 255).astype(np.float32)


def book_bank() -> np.ndarray:
    bank = np.zeros((7, 7, 3, 2), np.float32)
    bank[:, :, :, 0] = np.asarray(vertical(), np.float32)[:, :, None]
    bank[:, :, :, 1] = np.asarray(horizontal(), np.float32)[:, :, None]
    return bank


# --- peers -----------------------------------------------------------------------------------
# Each takes the convfilter arguments and returns an NHWC float32 result.


def cv2_conv_same(x, w):
    """cv2.filter2D once per (image, input channel, output channel), summed: how users write it."""
    n_img, height, width, n_in = x.shape
    fh, fw, _, n_out = w.shape
    top, left = (fh - 1) // 2, (fw - 1) // 2  # TF SAME: the odd cell at the bottom/right
    out = np.empty((n_img, height, width, n_out), np.float32)
    for n in range(n_img):
        planes = cv2.split(x[n])
        for k in range(n_out):
            acc = np.zeros((height, width), np.float32)
            for c in range(n_in):
                acc += cv2.filter2D(planes[c], -1, w[:, :, c, k], anchor=(left, top),
                                    borderType=cv2.BORDER_CONSTANT)
            out[n, :, :, k] = acc
    return out


def cv2_sep_same(x, col, row):
    top, left = (len(col) - 1) // 2, (len(row) - 1) // 2
    return cv2.sepFilter2D(x[0, :, :, 0], -1, row, col, anchor=(left, top),
                           borderType=cv2.BORDER_CONSTANT)[None, :, :, None]


def cv2_max_pool_2x2(x):
    """Max of each 2x2 block: dilate with the window anchored top-left, keep every 2nd cell."""
    return cv2.dilate(x[0], np.ones((2, 2), np.uint8), anchor=(0, 0))[::2, ::2][None]


def cv2_avg_pool_3x3_s2_same(x, counts):
    """Unnormalised 3x3 box sums anchored top-left with zero borders, every 2nd cell, / in-image count."""
    sums = cv2.boxFilter(x[0], -1, (3, 3), anchor=(0, 0), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return (sums[::2, ::2] / counts)[None]


def scipy_conv_same(x, w):
    n_img, height, width, n_in = x.shape
    fh, fw, _, n_out = w.shape
    # scipy centres at size // 2; TF SAME puts the window start at -(F - 1) // 2
    origin = (-((fh + 1) % 2), -((fw + 1) % 2))
    out = np.empty((n_img, height, width, n_out), np.float32)
    for n in range(n_img):
        for k in range(n_out):
            acc = np.zeros((height, width), np.float32)
            for c in range(n_in):
                acc += ndi.correlate(x[n, :, :, c], w[:, :, c, k], mode="constant", origin=origin)
            out[n, :, :, k] = acc
    return out


def scipy_sep_same(x, col, row):
    plane = ndi.correlate1d(x[0, :, :, 0], col, axis=0, mode="constant")
    return ndi.correlate1d(plane, row, axis=1, mode="constant")[None, :, :, None]


def scipy_max_pool_2x2(x):
    return ndi.maximum_filter(x, size=(1, 2, 2, 1), origin=(0, -1, -1, 0))[:, ::2, ::2]


def scipy_avg_pool_3x3_s2_same(x, counts):
    sums = ndi.uniform_filter(x, size=(1, 3, 3, 1), origin=(0, -1, -1, 0), mode="constant") * 9
    return sums[:, ::2, ::2] / counts[None]


def pool_counts(height: int, width: int, channels: int) -> np.ndarray:
    """In-image cells of each 3x3 stride-2 SAME window (TF divides by these)."""
    rows = np.minimum(np.arange(0, height, 2) + 3, height) - np.arange(0, height, 2)
    cols = np.minimum(np.arange(0, width, 2) + 3, width) - np.arange(0, width, 2)
    return np.repeat((rows[:, None] * cols[None, :]).astype(np.float32)[:, :, None], channels, axis=2)


# --- workloads -------------------------------------------------------------------------------


def workloads(rng):
    """(name, convfilter call, {peer: call}) for the four workloads of the issue."""
    images = book_images()
    bank = book_bank()
    dense = rng.standard_normal((7, 7, 3, 2)).astype(np.float32)
    photo = images[:1]
    layer = rng.standard_normal((3, 3, 3, 32)).astype(np.float32)
    big = rng.random((1, 2048, 2048, 1), dtype=np.float32)
    taps = np.asarray(gaussian_1d(31, 5.0), np.float32)
    gauss = np.outer(taps, taps)[:, :, None, None]
    tensor = rng.standard_normal((1, 1024, 1024, 32)).astype(np.float32)
    counts = pool_counts(1024, 1024, 32)

    def conv(x, w):
        return lambda: convfilter.conv2d(x, w, padding="SAME")

    def conv_relu(x, w):  # the ReLU fused into the convolution, as a keras user writes the layer
        return lambda: convfilter.conv2d(x, w, padding="SAME", activation="relu")

    def peers_conv(x, w, relu=False):
        post = (lambda z: np.maximum(z, 0)) if relu else (lambda z: z)
        peers = {}
        if cv2 is not None:
            peers["OpenCV filter2D"] = lambda: post(cv2_conv_same(x, w))
        if tf is not None:
            tx, tw = tf.constant(x), tf.constant(w)
            act = tf.nn.relu if relu else (lambda z: z)
            peers["TensorFlow"] = lambda: act(tf.nn.conv2d(tx, tw, 1, "SAME")).numpy()
        if ndi is not None:
            peers["scipy.ndimage"] = lambda: post(scipy_conv_same(x, w))
        return peers

    gauss_peers = {}
    if cv2 is not None:
        gauss_peers["OpenCV sepFilter2D"] = lambda: cv2_sep_same(big, taps, taps)
        gauss_peers["OpenCV filter2D"] = lambda: cv2_conv_same(big, gauss)
    if tf is not None:
        tbig, tgauss = tf.constant(big), tf.constant(gauss)
        gauss_peers["TensorFlow"] = lambda: tf.nn.conv2d(tbig, tgauss, 1, "SAME").numpy()
    if ndi is not None:
        gauss_peers["scipy.ndimage 1-D x2"] = lambda: scipy_sep_same(big, taps, taps)

    max_peers, avg_peers = {}, {}
    if cv2 is not None:
        max_peers["OpenCV dilate"] = lambda: cv2_max_pool_2x2(tensor)
        avg_peers["OpenCV boxFilter"] = lambda: cv2_avg_pool_3x3_s2_same(tensor, counts)
    if tf is not None:
        ttensor = tf.constant(tensor)
        max_peers["TensorFlow"] = lambda: tf.nn.max_pool2d(ttensor, 2, 2, "VALID").numpy()
        avg_peers["TensorFlow"] = lambda: tf.nn.avg_pool2d(ttensor, 3, 2, "SAME").numpy()
    if ndi is not None:
        max_peers["scipy.ndimage"] = lambda: scipy_max_pool_2x2(tensor)
        avg_peers["scipy.ndimage"] = lambda: scipy_avg_pool_3x3_s2_same(tensor, counts)

    return [
        ("1a book 2x427x640x3 * 7x7x3x2 line bank", conv(images, bank), peers_conv(images, bank)),
        ("1b book images * dense random 7x7x3x2", conv(images, dense), peers_conv(images, dense)),
        ("2 427x640x3 * 3x3x3x32 + ReLU", conv_relu(photo, layer), peers_conv(photo, layer, relu=True)),
        ("3 31x31 Gaussian on 2048x2048", conv(big, gauss), gauss_peers),
        ("4a max pool 2x2 on 1x1024x1024x32",
         lambda: convfilter.max_pool2d(tensor, 2), max_peers),
        ("4b avg pool 3x3 s2 SAME on 1x1024x1024x32",
         lambda: convfilter.avg_pool2d(tensor, 3, 2, "SAME"), avg_peers),
    ]


def scale_of(reference: np.ndarray) -> float:
    return float(np.max(np.abs(reference))) or 1.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed runs per entry (default 5)")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds per entry after the minimum runs (default 1)")
    parser.add_argument("--only", default="", help="run workloads whose name contains this text")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    missing = [name for name, mod in (("opencv", cv2), ("scipy", ndi), ("tensorflow", tf)) if mod is None]
    print(f"# convfilter {convfilter.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs"
          + (f"; not installed: {', '.join(missing)}" if missing else ""))
    print("| workload | library | median ms | peer / convfilter | max abs diff |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, ours, peers in workloads(rng):
        if args.only and args.only not in name:
            continue
        reference = ours()
        ours_s = median_seconds(ours, args.repeats, args.budget)
        print(f"| {name} | convfilter | {ours_s * 1e3:.1f} | 1.00 | |", flush=True)
        for peer, call in peers.items():
            result = call()
            diff = float(np.max(np.abs(np.asarray(result, np.float64) - reference)))
            peer_s = median_seconds(call, args.repeats, args.budget)
            print(f"| | {peer} | {peer_s * 1e3:.1f} | {peer_s / ours_s:.2f} | "
                  f"{diff:.1e} (of {scale_of(reference):.3g}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
