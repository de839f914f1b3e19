"""Cross-check convfilter against TensorFlow, the semantic reference, on many random cases.

Compares ``convfilter.conv2d`` with ``tf.nn.conv2d`` (odd and even kernels, strides,
dilations, SAME and VALID, tiny images, kernels larger than the image, banks that take
each of convfilter's exact fast paths, and 8-130 channels through each matrix-product
path forced and as the cost model chooses), ``depthwise_conv2d`` with
``tf.nn.depthwise_conv2d``, explicit padding (``tf.nn.conv2d`` and
``tf.nn.max_pool2d`` with ``[[0, 0], [top, bottom], [left, right], [0, 0]]``), ``pad`` against
``tf.pad`` (CONSTANT, REFLECT, SYMMETRIC), ``conv2d(border=...)`` against ``tf.pad`` then a VALID
``tf.nn.conv2d``, the explicit paddings both refuse, the keras pooling layers (``MaxPool2D``,
also with NaN cells, ``AvgPool2D``, ``GlobalAveragePooling2D``, ``GlobalMaxPooling2D``) and the book's example
exactly as the book writes it. Prints one row per family of cases: the number of cases, the
largest absolute difference, the largest difference relative to the output's magnitude (the
largest absolute value of the reference in that case), and FAIL when that relative
difference exceeds float32 rounding (1e-5).

TensorFlow is optional and never a dependency of convfilter; install it yourself
(``pip install tensorflow-cpu``) to run this check. Without it the script says so and exits 0.

    python benchmarks/check_tensorflow.py [--cases 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import convfilter
from convfilter import conv_paths, ops
from convfilter.geometry import axis

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
RELATIVE_TOLERANCE = 1e-5  # float32 rounding of a sum of a few hundred products, with room

# (strides, dilations) pairs: tf.nn.conv2d accepts dilations above 1 only with strides 1
STRIDE_DILATION = [((1, 1), (1, 1)), ((2, 3), (1, 1)), ((3, 2), (1, 1)), ((2, 2), (1, 1)),
                   ((1, 1), (2, 2)), ((1, 1), (2, 3))]
SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 13, 16, 31, 32]  # odd, even and tiny
TINY = [(1, 1), (1, 7), (7, 1), (2, 2), (1, 2)]


def load_tensorflow():
    """``(tf, keras)`` or None when TensorFlow is not importable."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf, tf.keras


class Family:
    """Running maxima of one family of cases."""

    def __init__(self, name: str, tolerance: float | None = RELATIVE_TOLERANCE, note: str = ""):
        self.name, self.tolerance, self.note = name, tolerance, note
        self.cases = 0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.worst = ""

    def add(self, ours, reference, label: str) -> None:
        ours = np.asarray(ours, np.float64)
        reference = np.asarray(reference, np.float64)
        if ours.shape != reference.shape:
            raise AssertionError(f"{self.name} {label}: shape {ours.shape} != reference {reference.shape}")
        diff = float(np.max(np.abs(ours - reference))) if ours.size else 0.0
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else np.inf)
        self.cases += 1
        self.max_abs = max(self.max_abs, diff)
        if rel > self.max_rel:
            self.max_rel, self.worst = rel, label

    @property
    def failed(self) -> bool:
        return self.tolerance is not None and self.max_rel > self.tolerance

    def row(self) -> str:
        if self.tolerance is None:
            status = "info"
        else:
            status = "FAIL" if self.failed else "ok"
        note = f" {self.note}" if self.note else ""
        worst = f" (worst: {self.worst})" if self.failed else ""
        return (f"| {self.name} | {self.cases} | {self.max_abs:.2e} | {self.max_rel:.2e} | "
                f"{status}{worst}{note} |")


# --- convolution ---------------------------------------------------------------------------


def conv2d_by_path(x, w, strides, padding, dilations, path: str = "auto"):
    """``convfilter.conv2d``, or the cross-correlation by one forced path of :data:`CONV_PATHS`."""
    if path == "auto":
        return convfilter.conv2d(x, w, strides=strides, padding=padding, dilations=dilations)
    gh = axis(x.shape[1], w.shape[0], strides[0], padding, dilations[0])
    gw = axis(x.shape[2], w.shape[1], strides[1], padding, dilations[1])
    return conv_paths.correlate(np.ascontiguousarray(x, np.float32), np.ascontiguousarray(w, np.float32),
                                strides, dilations, gh, gw, path=path, sum_channels=False)


def random_geometry(rng, tiny: bool = False, large_kernel: bool = False, channels=(1, 5), filters=(1, 6),
                    kernels=(1, 8)):
    """(N, H, W, C, fh, fw, F, strides, padding, dilations) of one valid tf.nn.conv2d call."""
    if tiny:
        height, width = TINY[rng.integers(len(TINY))]
    else:
        height, width = (int(v) for v in rng.choice(SIZES, 2))
    strides, dilations = STRIDE_DILATION[rng.integers(len(STRIDE_DILATION))]
    if large_kernel:  # larger than the image, so only SAME applies
        fh, fw = height + int(rng.integers(1, 5)), width + int(rng.integers(1, 5))
        padding = "SAME"
    else:
        fh, fw = (int(v) for v in rng.integers(*kernels, 2))
        effective_h, effective_w = (fh - 1) * dilations[0] + 1, (fw - 1) * dilations[1] + 1
        fits = effective_h <= height and effective_w <= width
        padding = "VALID" if fits and rng.random() < 0.5 else "SAME"
    n_img, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(*channels)), int(rng.integers(*filters))
    return n_img, height, width, n_in, fh, fw, n_out, strides, padding, dilations


def random_bank(rng, fh, fw, channels, n_out, kind: str) -> np.ndarray:
    """Filters that take one of convfilter's paths: dense (direct), sparse (zero taps skipped),
    rank1 (separable), uniform (channel sum, then direct or separable)."""
    if kind == "dense":
        return rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
    if kind == "sparse":
        w = rng.standard_normal((fh, fw, channels, n_out))
        w[rng.random(w.shape) < 0.7] = 0.0
        return w.astype(np.float32)
    if kind == "rank1":
        cols = rng.standard_normal((fh, 1, channels, n_out))
        cols[rng.random(cols.shape) < 0.3] = 0.0
        return (cols * rng.standard_normal((1, fw, channels, n_out))).astype(np.float32)
    if kind == "uniform":
        one = random_bank(rng, fh, fw, 1, n_out, "rank1" if rng.random() < 0.5 else "dense")
        return np.repeat(one, channels, axis=2)
    raise ValueError(kind)


def check_conv(tf, rng, family: Family, cases: int, kind: str, tiny=False, large_kernel=False,
               scale_images: int = 1, path: str = "auto", **shapes) -> None:
    """``cases`` random tf.nn.conv2d calls; ``path`` forces one of convfilter's paths and
    ``shapes`` (channels, filters, kernels: ranges) widen the random geometry."""
    for _ in range(cases):
        n_img, height, width, channels, fh, fw, n_out, strides, padding, dilations = random_geometry(
            rng, tiny, large_kernel, **shapes)
        if path in ("shifted", "winograd", "winograd 5x5"):
            strides = (1, 1)  # these paths run stride 1 only
        if path.startswith("winograd"):
            fh = fw = 5 if path.endswith("5x5") else 3
            dilations = (1, 1)
            padding = "SAME" if min(height, width) < fh * scale_images else padding
        height, width = height * scale_images, width * scale_images
        x = rng.standard_normal((n_img, height, width, channels)).astype(np.float32)
        w = random_bank(rng, fh, fw, channels, n_out, kind)
        ours = conv2d_by_path(x, w, strides, padding, dilations, path.split()[0])
        theirs = tf.nn.conv2d(x, w, strides=strides, padding=padding, dilations=dilations).numpy()
        family.add(ours, theirs, f"x{x.shape} w{w.shape} s{strides} d{dilations} {padding}")


def check_depthwise(tf, rng, family: Family, cases: int) -> None:
    """tf.nn.depthwise_conv2d: equal strides (TF's CPU kernel wants them), dilations with stride 1."""
    for _ in range(cases):
        height, width = (int(v) for v in rng.choice(SIZES, 2))
        stride = int(rng.integers(1, 3))
        rate = 1 if stride > 1 else int(rng.integers(1, 3))
        fh, fw = (int(v) for v in rng.integers(1, 6, 2))
        fits = (fh - 1) * rate + 1 <= height and (fw - 1) * rate + 1 <= width
        padding = "VALID" if fits and rng.random() < 0.5 else "SAME"
        channels, mult = int(rng.integers(1, 70)), int(rng.integers(1, 4))
        x = rng.standard_normal((int(rng.integers(1, 4)), height, width, channels)).astype(np.float32)
        w = rng.standard_normal((fh, fw, channels, mult)).astype(np.float32)
        ours = ops.depthwise_conv2d(x, w, stride, padding, rate)
        theirs = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], padding, dilations=[rate, rate]).numpy()
        family.add(ours, theirs, f"x{x.shape} w{w.shape} s{stride} d{rate} {padding}")


def check_large_conv(tf, rng, family: Family) -> None:
    """Images large enough that convfilter splits the work into bands on threads."""
    shapes = [((1, 211, 307, 3), (5, 5, 3, 8)), ((2, 128, 200, 4), (3, 4, 4, 6)),
              ((1, 300, 250, 1), (9, 9, 1, 3)), ((1, 257, 256, 3), (7, 7, 3, 2))]
    for x_shape, w_shape in shapes:
        for kind in ("dense", "rank1", "uniform"):
            x = rng.standard_normal(x_shape).astype(np.float32)
            w = random_bank(rng, *w_shape, kind)
            for strides, padding in (((1, 1), "SAME"), ((2, 3), "VALID")):
                ours = convfilter.conv2d(x, w, strides=strides, padding=padding)
                theirs = tf.nn.conv2d(x, w, strides=strides, padding=padding).numpy()
                family.add(ours, theirs, f"x{x_shape} w{w_shape} {kind} s{strides} {padding}")


# --- explicit padding and borders ------------------------------------------------------------


def random_pads(rng, limit: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return tuple((int(rng.integers(0, limit + 1)), int(rng.integers(0, limit + 1))) for _ in range(2))


def tf_list(pads) -> list:
    return [[0, 0], list(pads[0]), list(pads[1]), [0, 0]]


def check_explicit_conv(tf, rng, family: Family, cases: int) -> None:
    for k in range(cases):
        n_img, height, width, channels, fh, fw, n_out, strides, _, dilations = random_geometry(rng)
        pads = random_pads(rng, 4)
        if (fh - 1) * dilations[0] + 1 > height + sum(pads[0]) or (fw - 1) * dilations[1] + 1 > width + sum(pads[1]):
            continue  # both refuse a window larger than the padded input (checked in check_refusals)
        x = rng.standard_normal((n_img, height, width, channels)).astype(np.float32)
        w = random_bank(rng, fh, fw, channels, n_out, ("dense", "rank1", "uniform")[k % 3])
        given = tf_list(pads) if k % 2 else pads  # the TF list and the pair of pairs
        ours = convfilter.conv2d(x, w, strides=strides, padding=given, dilations=dilations)
        theirs = tf.nn.conv2d(x, w, strides=strides, padding=tf_list(pads), dilations=dilations).numpy()
        family.add(ours, theirs, f"x{x.shape} w{w.shape} s{strides} d{dilations} pads {pads}")


def check_explicit_max_pool(tf, rng, family: Family, cases: int) -> None:
    for _ in range(cases):
        height, width = (int(v) for v in rng.choice(SIZES, 2))
        pool = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        strides = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pads = tuple((int(rng.integers(0, p)), int(rng.integers(0, p))) for p in pool)  # smaller than the window
        if pool[0] > height + sum(pads[0]) or pool[1] > width + sum(pads[1]):
            continue
        x = (rng.standard_normal((int(rng.integers(1, 3)), height, width, int(rng.integers(1, 5)))) - 4.0)
        x = x.astype(np.float32)  # negative: a padding cell must never win
        ours = convfilter.max_pool2d(x, pool, strides, pads)
        theirs = tf.nn.max_pool2d(x, pool, strides, tf_list(pads)).numpy()
        family.add(ours, theirs, f"x{x.shape} pool{pool} s{strides} pads {pads}")


def check_pad(tf, rng, family: Family, cases: int) -> None:
    for k in range(cases):
        mode = ("CONSTANT", "REFLECT", "SYMMETRIC")[k % 3]
        shape = tuple(int(v) for v in rng.integers(1, 7, int(rng.integers(1, 5))))
        slack = {"REFLECT": -1, "SYMMETRIC": 0}.get(mode, 3)
        pads = [[int(rng.integers(0, max(size + slack, 0) + 1)) if mode != "CONSTANT" else int(rng.integers(0, 4))
                 for _ in range(2)] for size in shape]
        x = rng.standard_normal(shape).astype(np.float32)
        value = float(rng.standard_normal()) if mode == "CONSTANT" else 0.0
        ours = convfilter.pad(x, pads, mode, constant_values=np.float32(value))
        theirs = tf.pad(x, pads, mode, constant_values=value).numpy()
        family.add(ours, theirs, f"x{shape} {mode} pads {pads}")


def check_borders(tf, rng, family: Family, cases: int) -> None:
    """SAME's amounts filled with each mode: conv2d(border=m) against tf.pad(m) + VALID tf.nn.conv2d."""
    for k in range(cases):
        n_img, height, width, channels, fh, fw, n_out, strides, _, dilations = random_geometry(rng)
        mode = ("REFLECT", "SYMMETRIC")[k % 2]
        gh = axis(height, fh, strides[0], "SAME", dilations[0])
        gw = axis(width, fw, strides[1], "SAME", dilations[1])
        pads = [[0, 0], [gh.pad_before, gh.pad_after], [gw.pad_before, gw.pad_after], [0, 0]]
        slack = 1 if mode == "REFLECT" else 0
        if max(gh.pad_before, gh.pad_after) > height - slack or max(gw.pad_before, gw.pad_after) > width - slack:
            continue  # tf.pad's limits (both refuse: check_refusals)
        x = rng.standard_normal((n_img, height, width, channels)).astype(np.float32)
        w = random_bank(rng, fh, fw, channels, n_out, ("dense", "rank1", "uniform")[k % 3])
        ours = convfilter.conv2d(x, w, strides=strides, padding="SAME", dilations=dilations, border=mode)
        theirs = tf.nn.conv2d(tf.pad(x, pads, mode), w, strides=strides, padding="VALID", dilations=dilations)
        family.add(ours, theirs.numpy(), f"x{x.shape} w{w.shape} s{strides} d{dilations} {mode}")


def check_refusals(tf, family: Family) -> None:
    """Explicit paddings TensorFlow refuses, convfilter refuses too (a ValueError); the family's
    difference counts the cases where only one of them refused."""
    x = np.ones((1, 5, 5, 1), np.float32)
    w = np.ones((2, 2, 1, 1), np.float32)
    cases = [
        ("avg_pool2d explicit", lambda: tf.nn.avg_pool2d(x, 2, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]),
         lambda: convfilter.avg_pool2d(x, 2, 1, [[0, 0], [1, 1], [1, 1], [0, 0]])),
        ("max_pool2d padding = window", lambda: tf.nn.max_pool2d(x, 2, 2, [[0, 0], [2, 0], [0, 0], [0, 0]]),
         lambda: convfilter.max_pool2d(x, 2, 2, [[0, 0], [2, 0], [0, 0], [0, 0]])),
        ("max_pool2d batch padding", lambda: tf.nn.max_pool2d(x, 2, 1, [[1, 0], [1, 1], [1, 1], [0, 0]]),
         lambda: convfilter.max_pool2d(x, 2, 1, [[1, 0], [1, 1], [1, 1], [0, 0]])),
        ("max_pool2d negative", lambda: tf.nn.max_pool2d(x, 2, 1, [[0, 0], [-1, 1], [1, 1], [0, 0]]),
         lambda: convfilter.max_pool2d(x, 2, 1, [[0, 0], [-1, 1], [1, 1], [0, 0]])),
        ("conv2d negative", lambda: tf.nn.conv2d(x, w, 1, [[0, 0], [-1, 1], [1, 1], [0, 0]]),
         lambda: convfilter.conv2d(x, w, 1, [[0, 0], [-1, 1], [1, 1], [0, 0]])),
        ("conv2d window > padded input", lambda: tf.nn.conv2d(x, np.ones((9, 2, 1, 1), np.float32), 1,
                                                              [[0, 0], [1, 1], [0, 0], [0, 0]]),
         lambda: convfilter.conv2d(x, np.ones((9, 2, 1, 1), np.float32), 1, [[0, 0], [1, 1], [0, 0], [0, 0]])),
        ("tf.pad REFLECT = size", lambda: tf.pad(x, [[0, 0], [5, 0], [0, 0], [0, 0]], "REFLECT"),
         lambda: convfilter.pad(x, [[0, 0], [5, 0], [0, 0], [0, 0]], "REFLECT")),
        ("tf.pad SYMMETRIC > size", lambda: tf.pad(x, [[0, 0], [6, 0], [0, 0], [0, 0]], "SYMMETRIC"),
         lambda: convfilter.pad(x, [[0, 0], [6, 0], [0, 0], [0, 0]], "SYMMETRIC")),
    ]
    for label, theirs, ours in cases:
        refused = []
        for call in (theirs, ours):
            try:
                call()
                refused.append(False)
            except Exception:  # TensorFlow raises several kinds; convfilter a ValueError
                refused.append(True)
        family.add(float(refused[0] != refused[1]), 0.0, f"{label}: TF refused {refused[0]}, convfilter {refused[1]}")


# --- pooling -------------------------------------------------------------------------------


def check_pools(keras, rng, max_family: Family, avg_family: Family, cases: int) -> None:
    for _ in range(cases):
        tiny = rng.random() < 0.15
        height, width = TINY[rng.integers(len(TINY))] if tiny else (int(v) for v in rng.choice(SIZES, 2))
        pool = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        strides = None if rng.random() < 0.4 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        fits = pool[0] <= height and pool[1] <= width
        padding = "VALID" if fits and rng.random() < 0.5 else "SAME"
        shape = (int(rng.integers(1, 4)), height, width, int(rng.integers(1, 6)))
        # negative values (all of them in some cases): padding cells must never win or count
        x = (rng.standard_normal(shape) - (4.0 if rng.random() < 0.5 else 0.0)).astype(np.float32)
        label = f"x{shape} pool{pool} s{strides} {padding}"
        for family, layer, ours in ((max_family, keras.layers.MaxPool2D, convfilter.max_pool2d),
                                    (avg_family, keras.layers.AvgPool2D, convfilter.avg_pool2d)):
            theirs = layer(pool_size=pool, strides=strides, padding=padding.lower())(x).numpy()
            family.add(ours(x, pool, strides, padding), theirs, label)


def check_max_pool_nan(keras, rng, family: Family, cases: int) -> None:
    """NaN cells, which TensorFlow's max pool ignores, as convfilter's does. A window of NaNs only
    gives NaN in convfilter and the lowest float32 in TensorFlow: counted as agreeing."""
    lowest = np.finfo(np.float32).min
    for _ in range(cases):
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 20)), int(rng.integers(1, 20)), int(rng.integers(1, 6)))
        pool = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        strides = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        x = rng.standard_normal(shape).astype(np.float32)
        x[rng.random(shape) < 0.5] = np.nan
        theirs = keras.layers.MaxPool2D(pool_size=pool, strides=strides, padding="same")(x).numpy()
        ours = convfilter.max_pool2d(x, pool, strides, "SAME")
        ours = np.where((theirs == lowest) & np.isnan(ours), lowest, ours)
        family.add(np.where(np.isnan(ours), np.inf, ours), theirs, f"x{shape} pool{pool} s{strides} SAME, NaN cells")


def check_global_pools(keras, rng, families: dict[str, Family], cases: int) -> None:
    gap, gmp = keras.layers.GlobalAveragePooling2D(), keras.layers.GlobalMaxPooling2D()
    shapes = [(int(rng.integers(1, 4)), int(rng.choice(SIZES)), int(rng.choice(SIZES)), int(rng.integers(1, 6)))
              for _ in range(cases)]
    offsets = [100.0 if rng.random() < 0.5 else 0.0 for _ in shapes]
    # large maps with a large mean: where TensorFlow's float32 sums drift from the exact mean
    shapes += [(1, 512, 512, 8), (2, 427, 640, 3), (1, 1024, 1024, 4)]
    offsets += [100.0] * 3
    for shape, offset in zip(shapes, offsets):
        x = (rng.standard_normal(shape) + offset).astype(np.float32)
        exact = x.astype(np.float64).mean(axis=(1, 2))
        ours, theirs = convfilter.global_avg_pool2d(x), gap(x).numpy()
        label = f"x{shape} offset {offset:g}"
        families["gap_tf"].add(ours, theirs, label)
        families["gap_exact"].add(ours, exact, label)
        families["tf_exact"].add(theirs, exact, label)
        families["gmp"].add(convfilter.global_max_pool2d(x), gmp(x).numpy(), label)


# --- the book ------------------------------------------------------------------------------


def check_book(tf, family: Family) -> None:
    """Hands-On ML ch. 14, as the book writes it (its load_sample_image pictures are the ones in
    sample_images/): float64 images / 255, a float32 7x7x3x2 bank, tf.nn.conv2d SAME."""
    china = np.asarray(Image.open(SAMPLES / "china.jpg")) / 255
    flower = np.asarray(Image.open(SAMPLES / "flower.jpg")) / 255
    images = np.array([china, flower])
    batch_size, height, width, channels = images.shape

    filters = np.zeros(shape=(7, 7, channels, 2), dtype=np.float32)
    filters[:, 3, :, 0] = 1  # vertical line
    filters[3, :, :, 1] = 1  # horizontal line

    outputs = tf.nn.conv2d(images, filters, strides=1, padding="SAME")
    ours = convfilter.conv2d(images, filters, strides=1, padding="SAME")
    family.add(ours, outputs.numpy(), f"book {outputs.dtype.name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="random cases per family (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    loaded = load_tensorflow()
    if loaded is None:
        print("TensorFlow is not importable; skipping the cross-check (pip install tensorflow-cpu to run it)")
        return 0
    tf, keras = loaded
    rng = np.random.default_rng(args.seed)
    n = args.cases

    conv_families = []
    for kind, note in (("dense", "direct path"), ("sparse", "direct, zero taps skipped"),
                       ("rank1", "separable path"), ("uniform", "channel-sum path")):
        family = Family(f"tf.nn.conv2d {kind}", note=note)
        check_conv(tf, rng, family, n, kind)
        conv_families.append(family)
    many = dict(channels=(8, 131), filters=(1, 41))
    for path, note, shapes in (("im2col", "im2col path, 8-130 channels", dict(many, kernels=(1, 8))),
                               ("matmul", "matmul path (1x1), 8-130 channels", dict(many, kernels=(1, 2))),
                               ("shifted", "shifted path (stride 1), 8-130 channels", dict(many, kernels=(1, 8))),
                               ("winograd", "winograd path (3x3, stride 1), 8-130 channels", many),
                               ("winograd 5x5", "winograd path (5x5, stride 1), 8-130 channels", many),
                               ("auto", "paths chosen by the cost model, 8-130 channels", many)):
        family = Family(f"tf.nn.conv2d many channels, {path}", note=note)
        check_conv(tf, rng, family, max(n // 2, 1), "dense", path=path, **shapes)
        conv_families.append(family)
    depthwise = Family("tf.nn.depthwise_conv2d", note="1-69 channels, multiplier 1-3")
    check_depthwise(tf, rng, depthwise, n)
    conv_families.append(depthwise)
    tiny = Family("tf.nn.conv2d tiny images (1x1, 1x7, ...)")
    for kind in ("dense", "rank1", "uniform"):
        check_conv(tf, rng, tiny, max(n // 3, 1), kind, tiny=True)
    check_conv(tf, rng, tiny, max(n // 3, 1), "dense", tiny=True, path="im2col", channels=(8, 131))
    larger = Family("tf.nn.conv2d kernel larger than image, SAME")
    for kind in ("dense", "rank1", "uniform"):
        check_conv(tf, rng, larger, max(n // 3, 1), kind, large_kernel=True)
    threaded = Family("tf.nn.conv2d large images (threaded bands)")
    check_large_conv(tf, rng, threaded)

    explicit = Family("tf.nn.conv2d explicit padding")
    check_explicit_conv(tf, rng, explicit, n)
    explicit_max = Family("tf.nn.max_pool2d explicit padding")
    check_explicit_max_pool(tf, rng, explicit_max, n)
    pads = Family("tf.pad CONSTANT/REFLECT/SYMMETRIC")
    check_pad(tf, rng, pads, n)
    borders = Family("conv2d border= vs tf.pad + VALID", note="SAME's amounts, mirrored")
    check_borders(tf, rng, borders, n)
    refusals = Family("explicit paddings refused by both", tolerance=0.0, note="1 = only one refused")
    check_refusals(tf, refusals)

    max_pool, avg_pool = Family("keras MaxPool2D"), Family("keras AvgPool2D")
    check_pools(keras, rng, max_pool, avg_pool, n)
    max_pool_nan = Family("keras MaxPool2D, NaN cells", note="half the cells NaN")
    check_max_pool_nan(keras, rng, max_pool_nan, n)
    globals_ = {
        "gap_tf": Family("keras GlobalAveragePooling2D vs convfilter", tolerance=None,
                         note="TF's float32 mean drifts, see next rows"),
        "gap_exact": Family("convfilter global_avg_pool2d vs float64 mean"),
        "tf_exact": Family("keras GlobalAveragePooling2D vs float64 mean", tolerance=None,
                           note="TensorFlow's own drift"),
        "gmp": Family("keras GlobalMaxPooling2D"),
    }
    check_global_pools(keras, rng, globals_, n)
    book = Family("book example (float64 images, float32 bank)")
    check_book(tf, book)

    families = [*conv_families, tiny, larger, threaded, explicit, explicit_max, pads, borders, refusals, max_pool,
                max_pool_nan, avg_pool, *globals_.values(), book]
    print(f"# convfilter {convfilter.__version__} vs TensorFlow {tf.__version__}, numpy {np.__version__}, "
          f"seed {args.seed}; FAIL: max rel diff > {RELATIVE_TOLERANCE:g} of the output magnitude")
    print("| case family | cases | max abs diff | max rel diff | result |")
    print("| --- | ---: | ---: | ---: | --- |")
    for family in families:
        print(family.row())
    total = sum(f.cases for f in families)
    failed = [f.name for f in families if f.failed]
    print(f"# {total} cases; " + (f"FAILED: {', '.join(failed)}" if failed else "all within float32 rounding"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
