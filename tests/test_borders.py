"""Explicit padding, border modes and ``pad`` against independent references.

References: ``np.pad`` (its "reflect", "symmetric" and "edge" modes are TensorFlow's REFLECT,
SYMMETRIC and our EDGE) composed with the plain-loop formula of tests/naive.py with VALID
padding; ``scipy.ndimage`` ("mirror" is REFLECT, "reflect" is SYMMETRIC, "nearest" is EDGE);
``tf.pad``'s documented examples, computed by hand; hypothesis properties.
"""

import re

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from convfilter import conv_paths, ops, pad
from convfilter.geometry import axis

PROPERTY = settings(max_examples=40, deadline=None)
RNG = np.random.default_rng(17)
MODES = ["CONSTANT", "REFLECT", "SYMMETRIC", "EDGE"]
NUMPY_MODE = {"CONSTANT": "constant", "REFLECT": "reflect", "SYMMETRIC": "symmetric", "EDGE": "edge"}
SCIPY_MODE = {"CONSTANT": "constant", "REFLECT": "mirror", "SYMMETRIC": "reflect", "EDGE": "nearest"}
PATHS = [("planar", False), ("planar", True), ("separable", False), ("separable", True), ("im2col", False),
         ("shifted", False), ("winograd", False), ("blocked", False)]


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def rank_one(fh, fw, n_in, n_out):
    return (rand(fh, 1, n_in, n_out) * rand(1, fw, n_in, n_out)).astype(np.float32)


def reference(x, w, pads, mode, strides=(1, 1), dilations=(1, 1)):
    """np.pad with the mode's numpy name, then the plain-loop formula with no padding (float64)."""
    (top, bottom), (left, right) = pads
    padded = np.pad(np.asarray(x, np.float64), [(0, 0), (top, bottom), (left, right), (0, 0)], NUMPY_MODE[mode])
    return naive.conv2d(padded, w, strides, "VALID", dilations)


def assert_formula(result, x, w, pads, mode, strides=(1, 1), dilations=(1, 1), ulps=8, block=1):
    """Within float32 rounding of the float64 formula (the fast paths reorder sums; for Winograd's
    tolerance see TOLERANCES in test_fast_paths)."""
    expected = reference(x, w, pads, mode, strides, dilations)
    magnitude = reference(np.abs(x), np.abs(w), pads, mode, strides, dilations)
    assert result.shape == expected.shape and result.dtype == np.float32
    magnitude = naive.max_over_blocks(magnitude, block)
    excess = np.abs(result - expected) - ulps * np.finfo(np.float32).eps * (magnitude + 1e-30)
    assert np.all(excess <= 0), f"worst excess {excess.max():.3g}"


def reaches(mode, sizes, pads):
    """Whether ``mode`` can fill ``pads`` beside ``sizes`` (tf.pad: REFLECT < size, SYMMETRIC <= size)."""
    slack = {"REFLECT": -1, "SYMMETRIC": 0}.get(mode)
    return slack is None or all(max(p) <= size + slack for size, p in zip(sizes, pads))


def same_pads(size, window, stride, dilation=1):
    """(before, after) of TF's SAME, from the formula in tests/naive.py."""
    out, before = naive.same_pads(size, window, stride, dilation)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return before, total - before


# --- pad ----------------------------------------------------------------------------------------


def test_pad_matches_tf_pad_documented_examples():
    # tf.pad's own documentation: t = [[1, 2, 3], [4, 5, 6]], paddings [[1, 1], [2, 2]]
    t = np.array([[1, 2, 3], [4, 5, 6]])
    p = [[1, 1], [2, 2]]
    np.testing.assert_array_equal(pad(t, p), [[0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 2, 3, 0, 0],
                                              [0, 0, 4, 5, 6, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(pad(t, p, "REFLECT"), [[6, 5, 4, 5, 6, 5, 4], [3, 2, 1, 2, 3, 2, 1],
                                                         [6, 5, 4, 5, 6, 5, 4], [3, 2, 1, 2, 3, 2, 1]])
    np.testing.assert_array_equal(pad(t, p, "symmetric"), [[2, 1, 1, 2, 3, 3, 2], [2, 1, 1, 2, 3, 3, 2],
                                                           [5, 4, 4, 5, 6, 6, 5], [5, 4, 4, 5, 6, 6, 5]])
    np.testing.assert_array_equal(pad(t, p, "Edge"), [[1, 1, 1, 2, 3, 3, 3], [1, 1, 1, 2, 3, 3, 3],
                                                      [4, 4, 4, 5, 6, 6, 6], [4, 4, 4, 5, 6, 6, 6]])
    assert pad(t, p).dtype == t.dtype  # as tf.pad: no conversion
    np.testing.assert_array_equal(pad(t, [[0, 0], [1, 0]], constant_values=7), [[7, 1, 2, 3], [7, 4, 5, 6]])


@st.composite
def arrays_and_paddings(draw):
    mode = draw(st.sampled_from(MODES))
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    limit = {"REFLECT": -1, "SYMMETRIC": 0}.get(mode, 3)  # tf.pad's limits, relative to the size
    pads = [(draw(st.integers(0, size + limit if limit <= 0 else limit)),
             draw(st.integers(0, size + limit if limit <= 0 else limit))) for size in shape]
    return mode, np.arange(np.prod(shape), dtype=np.float32).reshape(shape), pads


@PROPERTY
@given(arrays_and_paddings())
def test_pad_equals_numpy_pad(case):
    mode, x, pads = case
    np.testing.assert_array_equal(pad(x, pads, mode), np.pad(x, pads, NUMPY_MODE[mode]))


def test_pad_pair_of_pairs_pads_height_and_width_of_images():
    x = rand(2, 3, 4, 5)
    np.testing.assert_array_equal(pad(x, ((1, 2), (0, 3)), "REFLECT"),
                                  np.pad(x, [(0, 0), (1, 2), (0, 3), (0, 0)], "reflect"))
    np.testing.assert_array_equal(pad(x[0], ((1, 2), (0, 3)), "EDGE"),
                                  np.pad(x[0], [(1, 2), (0, 3), (0, 0)], "edge"))


def test_pad_refuses_what_tf_pad_refuses():
    x = np.ones((3, 4))
    pad(x, [[2, 2], [3, 3]], "REFLECT")  # size - 1: the most REFLECT reaches
    with pytest.raises(ValueError, match="smaller than the axis size: axis 0 has 3 cells and padding 3, 0"):
        pad(x, [[3, 0], [0, 0]], "REFLECT")
    pad(x, [[3, 3], [4, 4]], "SYMMETRIC")  # the size: the most SYMMETRIC reaches
    with pytest.raises(ValueError, match="at most the axis size: axis 1 has 4 cells"):
        pad(x, [[0, 0], [0, 5]], "SYMMETRIC")
    np.testing.assert_array_equal(pad(x, [[9, 9], [9, 9]], "EDGE"), np.ones((21, 22)))  # no limit
    with pytest.raises(ValueError, match="cannot pad an empty axis"):
        pad(np.ones((0, 2)), [[1, 0], [0, 0]], "EDGE")
    with pytest.raises(ValueError, match="mode must be one of CONSTANT, REFLECT, SYMMETRIC, EDGE"):
        pad(x, [[1, 1], [1, 1]], "wrap")
    for bad in ([[1, 1]], [[1, 1], [1]], [[1, -1], [0, 0]], [[1.5, 1], [0, 0]], [[True, 0], [0, 0]], 3):
        with pytest.raises(ValueError, match="paddings"):
            pad(x, bad)
    with pytest.raises(ValueError, match="does not fit"):
        pad(np.ones((2, 2), np.uint8), [[1, 1], [1, 1]], constant_values=9.5)


# --- conv2d: explicit padding -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["tf", "pairs", "array"])
def test_explicit_padding_forms_match_the_formula(form):
    x, w = rand(2, 7, 9, 3), rand(3, 4, 3, 2)
    pads = ((2, 0), (1, 3))
    given_as = {"tf": [[0, 0], [2, 0], [1, 3], [0, 0]], "pairs": pads,
                "array": np.array([[0, 0], [2, 0], [1, 3], [0, 0]])}[form]
    result = ops.conv2d(x, w, strides=(2, 1), padding=given_as, dilations=1)
    assert_formula(result, x, w, pads, "CONSTANT", strides=(2, 1))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 5), kw=st.integers(1, 5),
       s=st.integers(1, 3), d=st.integers(1, 2), mode=st.sampled_from(MODES), seed=st.integers(0, 2**16))
def test_explicit_padding_with_same_numbers_equals_same(h, w, kh, kw, s, d, mode, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, h, w, 2)).astype(np.float32)
    k = rng.standard_normal((kh, kw, 2, 3)).astype(np.float32)
    pads = (same_pads(h, kh, s, d), same_pads(w, kw, s, d))
    try:
        want = ops.conv2d(x, k, s, "SAME", d, border=mode)
    except ValueError as exc:  # the mirror border cannot fill SAME's padding: explicit refuses as well
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            ops.conv2d(x, k, s, [[0, 0], *pads, [0, 0]], d, border=mode)
        return
    np.testing.assert_array_equal(ops.conv2d(x, k, s, [[0, 0], *pads, [0, 0]], d, border=mode), want)


def test_explicit_padding_is_refused_as_tensorflow_refuses_it():
    x, w = np.ones((5, 5, 1)), np.ones((2, 2, 1, 1))
    cases = [
        ([[1, 0], [1, 1], [1, 1], [0, 0]], "batch and channel axes must be [0, 0]"),
        ([[0, 0], [1, 1], [1, 1], [0, 2]], "batch and channel axes must be [0, 0]"),
        ([[0, 0], [-1, 1], [1, 1], [0, 0]], ">= 0"),
        (((1, 1), (1, 2, 3)), "whole numbers"),
        (((1, 1.5), (1, 2)), "whole numbers"),
        (((1, 1), (1, 1), (0, 0)), "whole numbers"),
        ([1, 1, 1, 1], "or explicit [[0, 0], [top, bottom]"),
        (2, "'SAME' or 'VALID'"),
    ]
    for padding, fragment in cases:
        with pytest.raises(ValueError, match=re.escape(fragment)):
            ops.conv2d(x, w, padding=padding)
    with pytest.raises(ValueError, match="9x2 is larger than the 5x5 input padded to 7x5 .padding 1,1,0,0.; pad more"):
        ops.conv2d(x, np.ones((9, 2, 1, 1)), padding=((1, 1), (0, 0)))
    # a window that lies wholly in the padding sees zeros, as in tf.nn.conv2d
    out = ops.conv2d(np.ones((2, 2, 1)), np.ones((2, 2, 1, 1)), padding=((4, 0), (0, 0)))
    np.testing.assert_array_equal(out[:, :, 0], [[0], [0], [0], [2], [4]])


# --- conv2d: border modes, on every path ---------------------------------------------------------

BORDER_CASES = [
    # (height, width, channels, fh, fw, filters, strides, padding, dilations)
    (9, 11, 3, 3, 3, 2, (1, 1), "SAME", (1, 1)),
    (10, 7, 2, 4, 2, 3, (1, 1), "SAME", (1, 1)),  # even kernel: the odd cell bottom/right
    (12, 13, 1, 5, 3, 1, (2, 3), "SAME", (1, 1)),
    (12, 13, 1, 3, 3, 4, (1, 1), ((2, 0), (1, 2)), (1, 1)),
    (15, 14, 2, 3, 2, 4, (1, 2), "SAME", (2, 3)),
    (6, 5, 3, 3, 3, 5, (1, 1), ((5, 5), (4, 4)), (1, 1)),  # REFLECT's and SYMMETRIC's largest
    (2, 2, 1, 3, 3, 1, (1, 1), "SAME", (1, 1)),
    (11, 9, 2, 5, 5, 3, (1, 1), "SAME", (1, 1)),  # winograd's 5x5 blocks
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path,uniform", PATHS,
                         ids=["planar", "planar-sum", "separable", "separable-sum", "im2col", "shifted", "winograd",
                              "blocked"])
@pytest.mark.parametrize("case", BORDER_CASES)
def test_every_path_fills_the_border_as_np_pad(case, path, uniform, mode):
    h, w, c, fh, fw, n_out, strides, padding, dilations = case
    strides = (1, 1) if path in ("shifted", "winograd") else strides  # these paths run stride 1 only
    if path == "winograd":
        if (fh, fw) not in conv_paths.WINOGRAD_KERNELS:
            pytest.skip("the winograd path runs 3x3 and 5x5 kernels only")
        dilations = (1, 1)
    if path == "blocked":  # blocks of 4 filters and 4 columns, window columns adjacent
        n_out, dilations = max(n_out, 4), (dilations[0], 1)
    x = rand(2, h, w, c)
    n_in = 1 if uniform else c
    bank = rank_one(fh, fw, n_in, n_out) if path == "separable" else rand(fh, fw, n_in, n_out)
    if uniform:
        bank = np.repeat(bank, c, axis=2)
    pads = padding if not isinstance(padding, str) else (same_pads(h, fh, strides[0], dilations[0]),
                                                           same_pads(w, fw, strides[1], dilations[1]))
    if not reaches(mode, (h, w), pads):
        with pytest.raises(ValueError, match=f"border {mode.lower()} needs padding"):
            ops.conv2d(x, bank, strides, padding, dilations, border=mode)
        return
    gh = axis(h, fh, strides[0], pads[0], dilations[0])
    gw = axis(w, fw, strides[1], pads[1], dilations[1])
    if path == "blocked" and gw.out < 4:
        pytest.skip("the blocked path needs 4 output columns")
    result = conv_paths.correlate(x, bank, strides, dilations, gh, gw, path=path, sum_channels=uniform if path in ("planar", "separable") else None,
                            border=mode)
    assert_formula(result, x, bank, pads, mode, strides, dilations,
                   **(dict(ulps=16, block=2) if path == "winograd" else {}))
    # the public call (fastest path, fused bias) gives the same (F(2x2, 5x5)'s rounding scales
    # with the output's magnitude, see TOLERANCES in test_fast_paths)
    scale = max(1.0, float(np.abs(result).max())) if path == "winograd" and fh == 5 else 1.0
    np.testing.assert_allclose(ops.conv2d(x, bank, strides, padding, dilations, border=mode), result,
                               rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["dense", "rank1"])  # the direct and the separable path
@pytest.mark.parametrize("shape", [(3, 3), (5, 5), (7, 3), (1, 9), (2, 2), (4, 3)])
def test_same_border_equals_scipy_correlate(mode, kind, shape):
    x = rand(23, 19, 1)
    k = rand(*shape) if kind == "dense" else np.outer(rand(shape[0]), rand(shape[1])).astype(np.float32)
    origin = [-1 if s % 2 == 0 else 0 for s in shape]  # TF's odd cell bottom/right (see test_ops)
    want = ndi.correlate(x[:, :, 0].astype(np.float64), k.astype(np.float64), mode=SCIPY_MODE[mode], origin=origin)
    got = ops.conv2d(x, k[:, :, None, None], border=mode)[:, :, 0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@PROPERTY
@given(h=st.integers(1, 12), w=st.integers(1, 12), k=st.integers(1, 7), c=st.integers(1, 4),
       mode=st.sampled_from(["REFLECT", "SYMMETRIC", "EDGE"]), value=st.floats(-10, 10, width=32))
def test_a_constant_image_blurred_with_a_mirror_border_stays_constant_to_the_last_pixel(h, w, k, c, mode, value):
    x = np.full((h, w, c), value, np.float32)
    box = np.full((k, k, c, 1), 1.0 / (k * k * c), np.float32)
    if not reaches(mode, (h, w), (same_pads(h, k, 1), same_pads(w, k, 1))):
        return  # the mirror cannot reach that far (refused: tested above)
    np.testing.assert_allclose(ops.conv2d(x, box, border=mode), value, rtol=1e-5, atol=1e-6)


def test_border_mode_is_checked():
    with pytest.raises(ValueError, match="border mode must be one of CONSTANT, REFLECT, SYMMETRIC, EDGE"):
        ops.conv2d(np.ones((5, 5, 1)), np.ones((3, 3, 1, 1)), border="wrap")
    with pytest.raises(ValueError, match="border reflect needs padding smaller than the input: 3\\+3 rows"):
        ops.conv2d(np.ones((3, 9, 1)), np.ones((7, 1, 1, 1)), border="reflect")


# --- pooling with explicit padding ------------------------------------------------------------


def max_pool_reference(x, ksize, strides, pads):
    """Padding cells never win: pad with -inf, then the plain max pool with no padding."""
    (top, bottom), (left, right) = pads
    padded = np.pad(np.asarray(x, np.float64), [(0, 0), (top, bottom), (left, right), (0, 0)],
                    constant_values=-np.inf)
    return naive.pool2d(padded, ksize, strides, "VALID", np.max)


@pytest.mark.parametrize("ksize,strides,pads", [
    ((3, 3), (2, 2), ((1, 1), (1, 1))),
    ((2, 3), (1, 2), ((1, 0), (2, 1))),
    ((4, 2), (3, 1), ((3, 2), (0, 1))),
    ((1, 1), (1, 1), ((0, 0), (0, 0))),
])
def test_explicit_max_pool_matches_the_reference(ksize, strides, pads):
    x = rand(2, 7, 6, 3) - 3.0  # negative: a zero padding cell would win
    got = ops.max_pool2d(x, ksize, strides, [[0, 0], *pads, [0, 0]])
    np.testing.assert_array_equal(got, max_pool_reference(x, ksize, strides, pads).astype(np.float32))


@PROPERTY
@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4), s=st.integers(1, 3))
def test_explicit_max_pool_with_same_numbers_equals_same(h, w, k, s):
    x = rand(1, h, w, 2) - 2.0
    pads = same_pads(h, k, s), same_pads(w, k, s)
    np.testing.assert_array_equal(ops.max_pool2d(x, k, s, pads), ops.max_pool2d(x, k, s, "SAME"))


def test_pools_refuse_explicit_padding_as_tensorflow_does():
    x = np.ones((5, 5, 1))
    with pytest.raises(ValueError, match="average pooling takes padding SAME or VALID only"):
        ops.avg_pool2d(x, 2, padding=((1, 1), (1, 1)))
    with pytest.raises(ValueError, match="top padding 2 with a window of 2"):
        ops.max_pool2d(x, 2, padding=[[0, 0], [2, 0], [0, 0], [0, 0]])
    with pytest.raises(ValueError, match="right padding 3 with a window of 3"):
        ops.max_pool2d(x, (2, 3), padding=((1, 1), (0, 3)))
    with pytest.raises(ValueError, match="batch and channel axes"):
        ops.max_pool2d(x, 2, padding=[[0, 0], [1, 1], [1, 1], [1, 0]])
