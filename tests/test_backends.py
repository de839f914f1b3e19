"""Numba's kernels and their numpy twins give the same bits on every path, and the choice between
them keeps a first run fast and quiet: no compile for one photo, no Numba import, the same output
bytes as a warm run, and on a terminal one line when a compile keeps the user waiting."""

import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CHECKOUT_ENV, ROOT, files_under, run_convfilter
from hypothesis import given, settings
from hypothesis import strategies as st

from convfilter import _backend, ops
from convfilter import threads as thread_pool
from convfilter.conv_paths import correlate
from convfilter.geometry import axis

BOOK = ["apply", "--kernel", "vertical", "--kernel", "horizontal", "sample_images/china.jpg",
        "sample_images/flower.jpg"]


def on_both(call):
    """``call()`` with Numba's kernels and with numpy's."""
    results = []
    for backend in ("numba", "numpy"):
        ops.set_backend(backend)
        try:
            results.append(call())
        finally:
            ops.set_backend("auto")
    return results


def assert_same_bits(jit, numpy_result):
    """Equal values, NaN where NaN, and the same sign on every zero."""
    assert jit.dtype == numpy_result.dtype == np.float32
    assert jit.shape == numpy_result.shape
    assert np.array_equal(jit, numpy_result, equal_nan=True)
    assert np.array_equal(np.signbit(jit), np.signbit(numpy_result))


def bank(rng, kind, fh, fw, channels, n_out):
    """Filters that take each path: dense with zero taps (direct), rank 1 (separable), the same on
    every channel (channel sum), a line kernel (separable with mostly zero taps)."""
    if kind == "dense":
        w = rng.standard_normal((fh, fw, channels, n_out)).astype(np.float32)
        w[rng.random(w.shape) < 0.3] = 0
    elif kind == "rank1":
        w = np.einsum("i,j,cf->ijcf", rng.standard_normal(fh), rng.standard_normal(fw),
                      rng.standard_normal((channels, n_out)))
    elif kind == "uniform":
        w = np.repeat(rng.standard_normal((fh, fw, 1, n_out)), channels, axis=2)
    else:  # a vertical line on every channel, as the book's kernels
        w = np.zeros((fh, fw, channels, n_out))
        w[:, fw // 2] = 1
    return np.asarray(w, np.float32)


CONV_CASES = [
    # (input shape, kind, kernel, filters, strides, dilations, padding)
    ((1, 9, 11, 1), "dense", (3, 3), 1, (1, 1), (1, 1), "SAME"),
    ((2, 13, 10, 3), "dense", (3, 3), 7, (1, 1), (1, 1), "SAME"),  # four, then two, then one filter
    ((1, 12, 17, 2), "dense", (5, 2), 2, (2, 3), (1, 1), "VALID"),
    ((1, 15, 16, 3), "dense", (3, 3), 5, (1, 2), (2, 1), "SAME"),  # dilation
    ((1, 1, 1, 3), "dense", (3, 3), 3, (1, 1), (1, 1), "SAME"),  # a 1x1 image
    ((2, 30, 21, 3), "rank1", (7, 5), 2, (1, 1), (1, 1), "SAME"),  # separable, groups of four rows
    ((1, 31, 20, 2), "rank1", (5, 3), 3, (2, 2), (1, 1), "SAME"),  # groups of two rows
    ((1, 23, 19, 1), "rank1", (6, 4), 1, (1, 1), (2, 1), "SAME"),  # one channel, read in place
    ((1, 17, 20, 1), "rank1", (9, 9), 2, (3, 1), (1, 1), "VALID"),
    ((2, 27, 33, 3), "line", (7, 7), 2, (1, 1), (1, 1), "SAME"),  # channel sum + separable
    ((1, 14, 9, 4), "uniform", (4, 3), 3, (1, 1), (1, 2), "SAME"),  # channel sum + direct
    ((1, 300, 250, 3), "line", (9, 9), 2, (1, 1), (1, 1), "SAME"),  # several row blocks
    ((1, 240, 300, 3), "dense", (3, 3), 4, (1, 1), (1, 1), "SAME"),
    ((2, 9, 11, 1), "dense", (1, 1), 6, (1, 1), (1, 1), "SAME"),  # a scaling (1x1 kernel, one channel)
    ((1, 41, 30, 1), "dense", (1, 1), 32, (2, 3), (1, 1), "VALID"),
]


@pytest.mark.parametrize("shape,kind,kernel,n_out,strides,dilations,padding", CONV_CASES)
@pytest.mark.parametrize("finish", [(None, "none"), ("bias", "relu"), (None, "relu"), ("bias", "tanh")])
def test_conv2d_paths_give_the_same_bits(shape, kind, kernel, n_out, strides, dilations, padding, finish):
    rng = np.random.default_rng(sum(shape) + n_out)
    x = rng.standard_normal(shape).astype(np.float32)
    w = bank(rng, kind, *kernel, shape[3], n_out)
    bias = rng.standard_normal(n_out).astype(np.float32) if finish[0] else None
    jit, numpy_result = on_both(lambda: ops.conv2d(x, w, strides, padding, dilations, bias=bias,
                                                   activation=finish[1]))
    assert_same_bits(jit, numpy_result)


@pytest.mark.parametrize("kind", ["dense", "rank1", "line", "uniform"])
@pytest.mark.parametrize("padding,border", [
    (((1, 2), (0, 3)), "CONSTANT"), (((3, 0), (2, 2)), "REFLECT"), ("SAME", "SYMMETRIC"), ("SAME", "EDGE"),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_explicit_padding_and_borders_give_the_same_bits(kind, padding, border, channels):
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((2, 11, 13, channels)).astype(np.float32)
    w = bank(rng, kind, 4, 5, channels, 2)
    assert_same_bits(*on_both(lambda: ops.conv2d(x, w, padding=padding, border=border, bias=0.5,
                                                 activation="relu")))


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_8_bit_samples_read_as_they_are_give_the_same_bits(channels):
    rng = np.random.default_rng(channels)
    samples = rng.integers(0, 256, (2, 150, 130, channels), dtype=np.uint8)  # several row blocks
    decoded = samples.copy()
    decoded.flags.writeable = False  # as Pillow's decoded images are
    for x in (samples, decoded):
        for kind in ("line", "uniform"):
            w = bank(rng, kind, 5, 5, channels, 2)
            jit, numpy_result = on_both(lambda: ops.conv2d(x, w, input_scale=255))
            assert_same_bits(jit, numpy_result)
            assert_same_bits(numpy_result, ops.conv2d(x.astype(np.float32) / np.float32(255), w))


def test_pools_with_explicit_padding_give_the_same_bits():
    x = np.random.default_rng(6).standard_normal((1, 10, 9, 2)).astype(np.float32) - 2
    assert_same_bits(*on_both(lambda: ops.max_pool2d(x, 3, 2, padding=((1, 1), (2, 0)))))


@pytest.mark.parametrize("path", ["planar", "separable"])
@pytest.mark.parametrize("sum_channels", [False, True])
@pytest.mark.parametrize("kind,kernel", [("line", (5, 5)), ("rank1", (3, 9)), ("rank1", (3, 21))])
def test_every_forced_path_gives_the_same_bits(path, sum_channels, kind, kernel):
    # the rank-1 rows of 9 and 21 taps: the separable row pass's passes of eight taps, after one of four
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 19, 23, 3)).astype(np.float32)
    w = np.repeat(bank(rng, kind, *kernel, 1, 3), 3, axis=2)  # the same on every channel, as sum_channels needs
    gh, gw = axis(19, kernel[0], 1, "SAME", 1), axis(23, kernel[1], 1, "SAME", 1)
    jit, numpy_result = on_both(lambda: correlate(x, w, (1, 1), (1, 1), gh, gw, path=path,
                                                  sum_channels=sum_channels))
    assert_same_bits(jit, numpy_result)


@pytest.mark.parametrize("shape,n_out", [((2, 19, 23, 16), 24), ((1, 9, 8, 20), 17), ((1, 40, 6, 3), 1)])
@pytest.mark.parametrize("finish", [(None, "none"), ("bias", "relu"), ("bias", "relu6"), (None, "tanh")])
@pytest.mark.parametrize("kernel", [3, 5])
def test_winograd_transforms_give_the_same_bits(shape, n_out, finish, kernel, monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 3, 4, 0], x[-1, 5, 1, -1], x[0, -1, -1, 0] = np.inf, np.nan, -np.inf  # crop odd edges too
    w = rng.standard_normal((kernel, kernel, shape[3], n_out)).astype(np.float32)
    w[1, 2, 0, 0] = -0.0
    bias = rng.standard_normal(n_out).astype(np.float32) if finish[0] else None
    gh, gw = axis(shape[1], kernel, 1, "SAME", 1), axis(shape[2], kernel, 1, "SAME", 1)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)  # several bands, on two threads
    thread_pool.set_num_threads(2)
    try:
        jit, numpy_result = on_both(lambda: correlate(x, w, (1, 1), (1, 1), gh, gw, path="winograd", bias=bias,
                                                      activation=finish[1]))
    finally:
        thread_pool.set_num_threads(None)
    assert_same_bits(jit, numpy_result)


@pytest.mark.parametrize("shape,n_out,kernel,strides", [
    ((1, 14, 12, 16), 24, (3, 3), (1, 1)), ((2, 9, 11, 32), 8, (3, 3), (2, 2)), ((1, 10, 10, 8), 40, (1, 1), (1, 1)),
])
def test_the_direct_loops_give_the_same_bits_where_auto_would_use_blas(shape, n_out, kernel, strides):
    # many channels and filters: the automatic choice takes a matrix-product path (the same numpy
    # code on both), so the direct loops are forced here
    rng = np.random.default_rng(n_out)
    x = rng.standard_normal(shape).astype(np.float32)
    w = bank(rng, "dense", *kernel, shape[3], n_out)
    bias = rng.standard_normal(n_out).astype(np.float32)
    gh, gw = axis(shape[1], kernel[0], strides[0], "SAME", 1), axis(shape[2], kernel[1], strides[1], "SAME", 1)
    assert_same_bits(*on_both(lambda: correlate(x, w, strides, (1, 1), gh, gw, path="planar", bias=bias,
                                                activation="relu")))


@pytest.mark.parametrize("width,n_out,strides", [
    (16, 4, (1, 1)), (17, 9, (1, 1)), (37, 6, (1, 1)), (40, 3, (2, 2)), (15, 5, (1, 1)), (64, 2, (1, 1)),
    (70, 5, (1, 1)), (1100, 7, (1, 1)), (48, 1, (1, 1)), (20, 3, (1, 1)), (33, 32, (1, 1)),
])
def test_the_direct_loops_vector_blocks_give_the_same_bits(width, n_out, strides):
    """The direct loops sum blocks of a vector register's outputs (the last block of a row
    overlapping the one before; a row narrower than a vector takes the loops over rows) for four
    filters, then the last one to three together (in blocks of four vectors where the row has
    them), and store them into the NHWC rows (in one run when the block has all the filters):
    each output the same float32 operations as numpy's twin, with NaN, infinities, and the signs
    of zero sums kept."""
    rng = np.random.default_rng(width + n_out)
    x = rng.standard_normal((2, 7, width, 3)).astype(np.float32)
    x[0, 1:6, : min(width, 20)] = 0.0  # zero sums, whose sign depends on the order of the adds
    x[1, 2, width // 2, 1], x[1, 5, width // 3, 0] = np.nan, np.inf
    w = bank(rng, "dense", 3, 3, 3, n_out)
    w[1, 1, 0, 0] = -0.0
    bias = rng.standard_normal(n_out).astype(np.float32)
    gh, gw = axis(7, 3, strides[0], "SAME", 1), axis(width, 3, strides[1], "SAME", 1)
    for finish in ({}, {"bias": bias, "activation": "relu"}):
        jit, numpy_result = on_both(lambda: correlate(x, w, strides, (1, 1), gh, gw, path="planar", **finish))
        assert_same_bits(jit, numpy_result)
        assert np.isnan(jit).any() and np.isinf(jit).any() and (jit == 0).any()


@pytest.mark.parametrize("path,kernel", [("matmul", (1, 1)), ("im2col", (3, 3)), ("shifted", (3, 3)),
                                         ("winograd", (3, 3))])
@pytest.mark.parametrize("finish", [{"bias": "bias", "activation": "relu"}, {"bias": None, "activation": "relu"},
                                    {"bias": "bias", "activation": "relu6"}, {"bias": "bias", "activation": "none"}])
def test_the_matrix_products_tiles_are_finished_the_same_way(path, kernel, finish):
    """The bias and the ReLU of a matrix-product path's tiles are one compiled pass or numpy's two
    (``finish_rows``): the same bits with NaN, infinities and a bias that overflows, and exactly
    the product with the bias added and then the activation, applied by numpy."""
    rng = np.random.default_rng(len(path) + kernel[0])
    x = rng.standard_normal((2, 9, 13, 24)).astype(np.float32)
    x[0, 3, 4, 5], x[1, 6, 2, 7], x[1, 2, 9, 0] = np.nan, np.inf, -np.inf
    x[0, 7, 11] *= 1e37  # sums that overflow once the bias is added
    w = rng.standard_normal((*kernel, 24, 40)).astype(np.float32)  # 40 filters: no multiple of a vector
    bias = rng.uniform(-3e38, 3e38, 40).astype(np.float32) if finish["bias"] else None  # large, finite
    gh, gw = axis(9, kernel[0], 1, "SAME", 1), axis(13, kernel[1], 1, "SAME", 1)
    activation = finish["activation"]
    jit, numpy_result = on_both(lambda: correlate(x, w, (1, 1), (1, 1), gh, gw, path=path, bias=bias,
                                                  activation=activation))
    assert_same_bits(jit, numpy_result)
    linear = correlate(x, w, (1, 1), (1, 1), gh, gw, path=path)
    with np.errstate(all="ignore"):
        expected = ops.activate(linear if bias is None else linear + bias, activation)
    assert_same_bits(jit, expected)
    assert np.isnan(jit).any() and (jit > 0).any()
    if activation != "none":
        assert (jit == 0).any()  # the ReLU clipped something
    if bias is not None and activation != "relu6":  # (ReLU6 caps infinities at 6)
        assert np.isinf(jit).any()


def test_a_tile_that_is_not_one_matrix_is_finished_in_place():
    """A tile whose rows are no single matrix in memory (every other column of an output) is
    finished where it is, by numpy's twin, not through a copy that the result would not see."""
    from convfilter import conv_paths

    rng = np.random.default_rng(5)
    out = rng.standard_normal((3, 8, 6)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    expected = out.copy()
    expected[:, ::2] = np.maximum(expected[:, ::2] + bias, np.float32(0))
    for backend in ("numba", "numpy"):
        ops.set_backend(backend)
        try:
            tile = out.copy()
            finish = conv_paths.finishing(bias, "relu", 6, tile.size)
            conv_paths.finish_tile(tile[:, ::2], finish, "relu")
        finally:
            ops.set_backend("auto")
        assert_same_bits(tile, expected)


DEPTHWISE_CASES = [
    # (input shape, kernel, multiplier, strides, dilations, padding)
    ((1, 9, 11, 1), (3, 3), 1, (1, 1), (1, 1), "SAME"),
    ((2, 13, 10, 8), (3, 3), 1, (2, 2), (1, 1), "SAME"),  # a network's strided depthwise layer
    ((1, 12, 17, 3), (5, 2), 2, (2, 3), (1, 1), "VALID"),  # a channel multiplier
    ((1, 15, 16, 4), (3, 3), 3, (1, 2), (2, 1), "SAME"),  # dilation
    ((1, 1, 1, 3), (3, 3), 2, (1, 1), (1, 1), "SAME"),  # a 1x1 image
    ((1, 160, 150, 6), (3, 3), 1, (1, 1), (1, 1), "SAME"),  # several row blocks
    # 3x3 kernels of one map per channel sum rows inside the image a kernel row at a time
    ((1, 15, 16, 4), (3, 3), 1, (1, 2), (2, 1), "SAME"),
    ((2, 10, 19, 24), (3, 3), 1, (2, 1), (1, 2), "VALID"),
]


@pytest.mark.parametrize("shape,kernel,mult,strides,dilations,padding", DEPTHWISE_CASES)
@pytest.mark.parametrize("finish", [(None, "none"), ("bias", "relu"), (None, "relu"), ("bias", "tanh")])
def test_depthwise_gives_the_same_bits(shape, kernel, mult, strides, dilations, padding, finish):
    rng = np.random.default_rng(sum(shape) + mult)
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., 0] = np.where(x[..., 0] > 0, 0.0, -0.0)  # signed zeros: the sums start from +0.0 on both
    w = rng.standard_normal((*kernel, shape[3], mult)).astype(np.float32)
    w[rng.random(w.shape) < 0.2] = 0
    bias = rng.standard_normal(shape[3] * mult).astype(np.float32) if finish[0] else None
    assert_same_bits(*on_both(lambda: ops.depthwise_conv2d(x, w, strides, padding, dilations, bias=bias,
                                                           activation=finish[1])))


def test_depthwise_with_non_finite_inputs_and_explicit_padding_gives_the_same_bits():
    x = np.random.default_rng(3).standard_normal((1, 12, 13, 3)).astype(np.float32)
    x[0, 3, 4, 0], x[0, 7, 1, 1], x[0, 0, 12, 2] = np.nan, np.inf, -np.inf
    for shape in ((4, 3, 3, 2), (3, 3, 3, 1)):
        w = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
        w[1, 1] = 0  # a zero tap times infinity is NaN on both
        for padding in ("SAME", ((2, 1), (0, 3))):
            assert_same_bits(*on_both(lambda: ops.depthwise_conv2d(x, w, padding=padding)))


@pytest.mark.parametrize("threads", [2, 3])
def test_thread_bands_give_the_same_bits(threads, monkeypatch):
    # bands start mid-image: the separable kernel's row groups restart at each band
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 41, 37, 3)).astype(np.float32)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)
    ops.set_num_threads(threads)
    try:
        for w in (bank(rng, "line", 7, 7, 3, 2), bank(rng, "rank1", 9, 3, 3, 1), bank(rng, "dense", 3, 3, 3, 5)):
            assert_same_bits(*on_both(lambda: ops.conv2d(x, w, bias=0.25, activation="relu")))
        assert_same_bits(*on_both(lambda: ops.avg_pool2d(x, 3, 2, "SAME")))
        assert_same_bits(*on_both(lambda: ops.max_pool2d(x, 3, 1, "SAME")))
        depthwise = bank(rng, "dense", 3, 3, 3, 2)
        assert_same_bits(*on_both(lambda: ops.depthwise_conv2d(x, depthwise, 2)))
    finally:
        ops.set_num_threads(None)


POOL_CASES = [
    ((1, 8, 8, 3), (2, 2), (2, 2), "VALID"),
    ((2, 9, 7, 2), (3, 3), (2, 2), "SAME"),
    ((1, 5, 6, 1), (2, 3), (1, 2), "SAME"),
    ((1, 1, 1, 4), (3, 3), (2, 2), "SAME"),
    ((1, 7, 7, 5), (3, 2), (3, 1), "VALID"),
    ((1, 11, 4, 2), (4, 4), (3, 3), "SAME"),
    ((2, 300, 400, 3), (3, 2), (1, 1), "SAME"),  # several row blocks
]


@pytest.mark.parametrize("shape,ksize,strides,padding", POOL_CASES)
@pytest.mark.parametrize("pool", [ops.max_pool2d, ops.avg_pool2d])
def test_pools_give_the_same_bits(shape, ksize, strides, padding, pool):
    rng = np.random.default_rng(len(shape) + sum(ksize))
    x = rng.standard_normal(shape).astype(np.float32)
    x[..., 0] = np.where(x[..., 0] > 0, 0.0, -0.0)  # signed zeros: which one wins must agree
    assert_same_bits(*on_both(lambda: pool(x, ksize, strides, padding)))


@pytest.mark.parametrize("shape,ksize,strides,padding", POOL_CASES)
def test_max_pool_gives_the_same_bits_on_signed_zeros_and_nans(shape, ksize, strides, padding):
    # which of two equal cells stays, and which NaN of a window of NaNs, depends on the order of
    # the steps: numpy's twin must take the kernel's
    rng = np.random.default_rng(sum(shape))
    x = rng.choice(np.array([-1.0, -0.0, 0.0, np.nan], np.float32), size=shape)
    x.view(np.int32)[rng.random(shape) < 0.1] = -4194305  # a NaN with its sign bit and a payload
    jit, numpy_result = on_both(lambda: ops.max_pool2d(x, ksize, strides, padding))
    assert np.array_equal(jit.view(np.int32), numpy_result.view(np.int32))


def test_non_finite_inputs_give_the_same_bits():
    x = np.random.default_rng(2).standard_normal((1, 12, 13, 3)).astype(np.float32)
    x[0, 3, 4, 0], x[0, 7, 1, 1], x[0, 0, 12, 2] = np.nan, np.inf, -np.inf
    for w in (bank(np.random.default_rng(1), "dense", 3, 3, 3, 2), bank(None, "line", 5, 5, 3, 2)):
        assert_same_bits(*on_both(lambda: ops.conv2d(x, w)))
    for pool in (ops.max_pool2d, ops.avg_pool2d):
        assert_same_bits(*on_both(lambda: pool(x, 3, 2, "SAME")))


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(1, 14), st.integers(1, 14)),
    kernel=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    channels=st.integers(1, 4),
    n_out=st.integers(1, 6),
    kind=st.sampled_from(["dense", "rank1", "uniform", "line"]),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.sampled_from(["SAME", "VALID"]),
    relu=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_both_kernels_give_the_same_bits(size, kernel, channels, n_out, kind, strides, dilations,
                                                  padding, relu, seed):
    (height, width), (fh, fw) = size, kernel
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, height, width, channels)).astype(np.float32)
    if padding == "VALID" and ((fh - 1) * dilations[0] >= height or (fw - 1) * dilations[1] >= width):
        return  # refused by conv2d, tested elsewhere
    w = bank(rng, kind, fh, fw, channels, n_out)
    bias = rng.standard_normal(n_out).astype(np.float32)
    # ops._conv2d: conv2d without its warning about banks that also fit PyTorch's layout, which
    # some drawn shapes do (e.g. (6, 3, 3, 3) on 3 channels); the bits are the question here
    assert_same_bits(*on_both(lambda: ops._conv2d(x, w, strides, padding, dilations, bias=bias,
                                                  activation="relu" if relu else None)))
    if padding == "SAME" or (fh <= height and fw <= width):
        for pool in (ops.max_pool2d, ops.avg_pool2d):
            assert_same_bits(*on_both(lambda: pool(x, (fh, fw), strides, padding)))


# --- the choice between them -----------------------------------------------------------------


def test_small_work_runs_on_numpy_and_large_work_on_cached_numba(monkeypatch):
    monkeypatch.setattr(_backend, "loaded", lambda name: False)
    monkeypatch.setattr(_backend, "_repeats", 1)
    monkeypatch.setattr(_backend, "_numpy_work", {})
    monkeypatch.setattr(_backend, "is_cached", lambda name: True)
    one_photo = 2 * 427 * 2 * (8 * 646 + 4 * 640)  # the book's two line kernels on one photo
    assert not _backend._use_numba("correlate_separable", one_photo)
    assert _backend._use_numba("correlate_separable", 1e10)
    _backend.expect_repeats(1000)  # a batch of a thousand photos
    try:
        assert _backend._use_numba("correlate_separable", one_photo)
    finally:
        _backend.expect_repeats(1)
    monkeypatch.setattr(_backend, "is_cached", lambda name: False)
    assert not _backend._use_numba("correlate_separable", 20 * one_photo)  # a compile costs seconds


def test_a_loop_of_calls_moves_to_numba_once_numpy_has_cost_its_start_up(monkeypatch):
    monkeypatch.setattr(_backend, "loaded", lambda name: False)
    monkeypatch.setattr(_backend, "_repeats", 1)
    monkeypatch.setattr(_backend, "_numpy_work", {})
    monkeypatch.setattr(_backend, "is_cached", lambda name: True)
    layer = 224 * 224 * 32 * 25  # a 5x5 bank of 32 filters on a 224x224 gray image: 40 ms on numpy
    choices = [_backend._use_numba("correlate_planar", layer) for _ in range(20)]
    assert not choices[0] and choices[-1]
    first = choices.index(True)
    assert all(choices[first:])
    # by then numpy had spent about Numba's start-up (import, load): never much more
    numpy_ns, numba_ns, _ = _backend.COSTS["correlate_planar"]
    spent = first * layer * numpy_ns * 1e-9
    start_up = (0 if "numba" in sys.modules else _backend.IMPORT_NUMBA) + _backend.FIRST_LOAD + _backend.LOAD
    assert 0.5 * start_up < spent < 1.5 * start_up


def test_a_kernel_loaded_in_this_process_is_used_at_any_size(monkeypatch):
    monkeypatch.setattr(_backend, "loaded", lambda name: True)
    assert _backend._use_numba("max_pool", 1)


def test_when_numba_cannot_load_the_numpy_kernels_run(monkeypatch):
    from convfilter import _numpy_kernels

    def no_numba(name):
        raise OSError("Could not find/load shared object file 'libllvmlite.so'")

    monkeypatch.setattr(_backend, "_numba_kernel", no_numba)
    monkeypatch.setattr(_backend, "_numba_failed", False)
    monkeypatch.setattr(_backend, "loaded", lambda name: True)  # the rule would pick Numba
    assert _backend.kernel("max_pool", 1e12) is _numpy_kernels.max_pool
    assert not _backend._use_numba("avg_pool", 1e12)  # not tried again in this process
    ops.set_backend("numba")
    try:
        with pytest.raises(OSError, match="libllvmlite"):  # asked for Numba: no silent fallback
            _backend.kernel("max_pool", 1)
    finally:
        ops.set_backend("auto")


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="unknown backend 'gpu'; choose one of auto, numba, numpy"):
        ops.set_backend("gpu")


def fresh_env(folder: Path, **extra) -> dict:
    """A user with empty home, cache and runtime folders (a first run ever)."""
    env = {k: v for k, v in CHECKOUT_ENV.items()
           if k not in ("NUMBA_CACHE_DIR", "CONVFILTER_BACKEND", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR")}
    for name in ("home", "cache", "runtime"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(folder / "home"), XDG_CACHE_HOME=str(folder / "cache"),
               XDG_RUNTIME_DIR=str(folder / "runtime"), **extra)
    return env


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "cache").rglob("*.nb*"))


def python_as_a_new_user(code: str, folder: Path) -> str:
    """Run ``code`` in a fresh Python with empty home, cache and runtime folders; its stdout."""
    done = subprocess.run([sys.executable, "-c", code], env=fresh_env(folder), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_is_cached_reads_the_index_of_the_current_source(tmp_path):
    code = ("from convfilter import _backend, ops\n"
            "import numpy as np, sys\n"
            "before = _backend.is_cached('max_pool')\n"
            "ops.set_backend('numba'); ops.max_pool2d(np.ones((4, 4, 1), np.float32), 2)\n"
            "_backend._cached.clear()\n"
            "after = _backend.is_cached('max_pool'), _backend.is_cached('avg_pool')\n"
            "_backend._cached.clear(); _backend._hash = b'another source' * 3\n"
            "print(before, after, _backend.is_cached('max_pool'))\n")
    assert python_as_a_new_user(code, tmp_path).split() == ["False", "(True,", "False)", "False"]
    # only the kernel that ran was compiled
    assert all("max_pool" in name for name in cache_files(tmp_path)), cache_files(tmp_path)


def test_the_library_on_small_work_does_not_import_numba(tmp_path):
    code = ("import sys, numpy as np, convfilter\n"
            "x = np.random.default_rng(0).random((1, 40, 50, 3), np.float32)\n"
            "convfilter.conv2d(x, np.ones((3, 3, 3, 2)), bias=1.0, activation='relu')\n"
            "convfilter.conv2d(x, np.random.default_rng(1).random((3, 3, 3, 2)), strides=2)\n"
            "convfilter.max_pool2d(x, 2); convfilter.avg_pool2d(x, 3, 2, 'SAME')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))\n")
    assert python_as_a_new_user(code, tmp_path).strip() == "[]"


def assert_only_the_report(stderr: str) -> None:
    """The book command's stderr: the files written and the summary, nothing else."""
    *written, summary = stderr.splitlines()
    assert summary == "processed 2, failed 0, skipped 0", stderr
    assert len(written) == 4 and all(line.startswith("wrote ") for line in written), stderr


def test_first_run_ever_compiles_nothing_and_imports_no_numba(tmp_path):
    # The README's book command with empty home, cache and runtime folders.
    driver = ("import sys\n"
              "from convfilter.cli import main\n"
              "try:\n"
              "    main(sys.argv[1:])\n"
              "finally:\n"
              "    print('numba' in sys.modules, file=open(sys.argv[-1] + '.numba', 'w'))\n")
    out = tmp_path / "cold"
    done = subprocess.run([sys.executable, "-c", driver, *BOOK, "-o", str(out)], cwd=ROOT,
                          env=fresh_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_only_the_report(done.stderr)  # not a terminal: no compile notice
    assert (tmp_path / "cold.numba").read_text().strip() == "False"
    assert cache_files(tmp_path) == []
    assert len(list(out.glob("*.png"))) == 4


def test_first_run_output_is_byte_identical_to_a_warm_numba_run(tmp_path):
    cold = tmp_path / "cold"
    done = run_convfilter(*BOOK, "-o", cold, cwd=ROOT, env=fresh_env(tmp_path / "first"), timeout=300)
    assert done.returncode == 0, done.stderr

    # Numba on a cold cache, stderr a terminal: it compiles, and says so once
    numba_env = fresh_env(tmp_path / "numba", CONVFILTER_BACKEND="numba")
    controller, terminal = pty.openpty()
    try:
        compiled = subprocess.run([sys.executable, "-m", "convfilter", *BOOK, "-o", str(tmp_path / "compiled")],
                                  cwd=ROOT, env=numba_env, stdout=subprocess.DEVNULL, stderr=terminal, timeout=900)
        os.close(terminal)
        told = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            told += chunk
    finally:
        os.close(controller)
    assert compiled.returncode == 0, told
    text = told.decode()
    assert text.count("compiling the image kernels") == 1, text
    assert "once" in text

    # the same again: loaded from the cache, silent when not a terminal
    warm = tmp_path / "warm"
    done = run_convfilter(*BOOK, "-o", warm, cwd=ROOT, env=numba_env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_only_the_report(done.stderr)
    assert len(files_under(cold)) == 4
    assert files_under(cold) == files_under(warm) == files_under(tmp_path / "compiled")
