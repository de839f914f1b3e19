"""Built-in kernels, kernel specs and kernel files."""

import numpy as np
import pytest
import scipy.ndimage as ndi

from convfilter import kernels as K
from convfilter import ops

# name -> (shape, sum) from the definitions in the kernel table of docs/kernels.md
EXPECTED = {
    "vertical": ((7, 7), 7), "horizontal": ((7, 7), 7), "diagonal": ((7, 7), 7), "antidiagonal": ((7, 7), 7),
    "sobel-x": ((3, 3), 0), "sobel-y": ((3, 3), 0), "scharr-x": ((3, 3), 0), "scharr-y": ((3, 3), 0),
    "prewitt-x": ((3, 3), 0), "prewitt-y": ((3, 3), 0), "laplacian": ((3, 3), 0), "outline": ((3, 3), 0),
    "gaussian": ((5, 5), 1), "box": ((3, 3), 1), "sharpen": ((3, 3), 1), "emboss": ((3, 3), 1),
    "identity": ((3, 3), 1),
}


def grid(spec):
    return np.asarray(K.resolve(spec).weights, np.float64)


def test_every_builtin_is_listed_and_checked():
    assert set(K.REGISTRY) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_shape_and_sum(name):
    shape, total = EXPECTED[name]
    weights = grid(name)
    assert weights.shape == shape
    assert weights.sum() == pytest.approx(total, abs=1e-12)
    assert K.resolve(name.upper()).weights == K.resolve(name).weights  # names are case-insensitive


def test_line_kernels_by_position():
    v, h, d, a = grid("vertical:5"), grid("horizontal:5"), grid("diagonal:4"), grid("antidiagonal:4")
    assert v.shape == h.shape == (5, 5) and d.shape == a.shape == (4, 4)
    np.testing.assert_array_equal(v[:, 2], 1)
    np.testing.assert_array_equal(h[2, :], 1)
    assert v.sum() == h.sum() == 5
    np.testing.assert_array_equal(d, np.eye(4))
    np.testing.assert_array_equal(a, np.fliplr(np.eye(4)))
    np.testing.assert_array_equal(grid("identity:5"), np.pad([[1.0]], 2))


def test_fixed_kernels_by_value():
    np.testing.assert_array_equal(grid("sobel-x"), [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    np.testing.assert_array_equal(grid("sobel-y"), [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    np.testing.assert_array_equal(grid("scharr-x"), [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
    np.testing.assert_array_equal(grid("prewitt-y"), [[-1, -1, -1], [0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(grid("laplacian"), [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(grid("outline"), [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(grid("sharpen"), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])


def step_image(axis_name):
    """0 on the first half, 1 on the second: brightness rises to the right (x) or downward (y)."""
    x = np.zeros((8, 8, 1), np.float32)
    if axis_name == "x":
        x[:, 4:] = 1
    else:
        x[4:, :] = 1
    return x


@pytest.mark.parametrize("family,scale", [("sobel", 4), ("scharr", 16), ("prewitt", 3)])
def test_derivatives_are_positive_where_brightness_rises(family, scale):
    for axis_name in ("x", "y"):
        w = grid(f"{family}-{axis_name}")[:, :, None, None]
        out = ops.conv2d(step_image(axis_name), w, padding="VALID")[:, :, 0]  # 6x6, no border effects
        edge = out[:, 2:4] if axis_name == "x" else out[2:4, :]  # windows straddling the step
        # the column/row weights of the smoothing part, within float32 rounding (the separable
        # path factors the kernel, so the sum may round differently from the direct one)
        np.testing.assert_allclose(edge, scale, rtol=1e-6)
        assert np.count_nonzero(out) == edge.size
        other = "y" if axis_name == "x" else "x"
        w_other = grid(f"{family}-{other}")[:, :, None, None]
        np.testing.assert_allclose(ops.conv2d(step_image(axis_name), w_other, padding="VALID"), 0, atol=1e-6)


@pytest.mark.parametrize("size", [3, 5, 7, 9])
def test_gaussian_default_sigma_is_opencvs(size):
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    impulse = np.zeros((size, size))
    impulse[size // 2, size // 2] = 1
    # scipy's sampled, normalised Gaussian of radius size//2 is the same kernel for odd sizes
    want = ndi.gaussian_filter(impulse, sigma, mode="constant", truncate=(size // 2) / sigma)
    np.testing.assert_allclose(grid(f"gaussian:{size}"), want, rtol=1e-12, atol=1e-15)


def test_gaussian_sigma_and_even_size():
    g = grid("gaussian:9:2")
    taps = np.exp(-((np.arange(9) - 4.0) ** 2) / (2 * 2.0**2))
    np.testing.assert_allclose(g, np.outer(taps, taps) / taps.sum() ** 2, rtol=1e-12)
    wide, narrow = grid("gaussian:9:5"), grid("gaussian:9:0.5")
    assert wide[4, 4] < g[4, 4] < narrow[4, 4]
    even = grid("gaussian:4:1")
    assert even.shape == (4, 4) and even.sum() == pytest.approx(1)
    np.testing.assert_allclose(even, even[::-1, ::-1])  # symmetric about the centre between cells
    assert grid("gaussian").shape == (5, 5)


def test_box_sizes():
    np.testing.assert_allclose(grid("box:9"), np.full((9, 9), 1 / 81))
    np.testing.assert_allclose(grid("box:2"), np.full((2, 2), 0.25))


def test_labels_name_the_output_files():
    assert K.resolve("vertical").label == "vertical"
    assert K.resolve("gaussian:9:2").label == "gaussian-9-2"
    assert K.resolve("1,0,-1").label == "custom"


@pytest.mark.parametrize("typo,suggestion", [("vertcal", "'vertical'"), ("sobelx", "'sobel-x'"),
                                              ("gausian", "'gaussian'"), ("Horizontl:5", "'horizontal'")])
def test_unknown_names_suggest_a_close_one(typo, suggestion):
    with pytest.raises(ValueError) as info:
        K.resolve(typo)
    assert "did you mean" in str(info.value) and suggestion in str(info.value)
    assert "convfilter kernels" in str(info.value)


def test_unknown_name_without_neighbours():
    with pytest.raises(ValueError, match="unknown kernel 'zzzz'") as info:
        K.resolve("zzzz")
    assert "did you mean" not in str(info.value)


def test_inline_matrices():
    np.testing.assert_array_equal(grid("1,0,-1;2,0,-2;1,0,-1"), [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.testing.assert_array_equal(grid(" 1 2 ; 3 4 "), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(grid("0.5,-.25,1e-1"), [[0.5, -0.25, 0.1]])
    np.testing.assert_array_equal(grid("1\n2\n3"), [[1], [2], [3]])


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("1,2;3", "rows have different lengths"),
        ("1,2;3", "rows have different lengths"),
        ("1,a;2,3", "unknown kernel"),
        ("", "empty kernel"),
        ("   ", "empty kernel"),
        (";", "unknown kernel"),
        ("box:0", "between 1 and"),
        ("box:x", "whole number"),
        ("box:3:1", "too many ':'"),
        ("vertical:5:2", "too many ':'"),
        ("gaussian:5:0", "sigma"),
        ("gaussian:5:-1", "sigma"),
        ("gaussian:5:nan", "sigma"),
        ("gaussian:5:1:2", "too many ':'"),
        ("1e100", "within float32 range"),  # float32 filters: it would become infinity
        ("1,-3.5e38", "within float32 range"),
        ("sobel-x:5", "fixed size"),
        ("box:100000", "between 1 and"),
        ("missing.npy", "not found"),
        ("missing.txt", "not found"),
    ],
)
def test_bad_specs_are_rejected(spec, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        K.resolve(spec)


def test_a_letter_in_a_matrix_is_not_silently_accepted():
    # '1,0,-1;2,O,-2' (letter O): must fail, not drop the cell
    with pytest.raises(ValueError):
        K.resolve("1,0,-1;2,O,-2;1,0,-1")


# --- files ---------------------------------------------------------------------------------------


def test_text_and_csv_files(tmp_path):
    txt = tmp_path / "edge.txt"
    txt.write_text("# my kernel\n1 0 -1\n2 0 -2   # middle row\n\n1 0 -1\n")
    csv = tmp_path / "blur.csv"
    csv.write_text("1,2,1\n2,4,2\n1,2,1\n")
    kernel = K.resolve(str(txt))
    assert kernel.label == "edge" and kernel.size == (3, 3) and kernel.map_count == 1
    np.testing.assert_array_equal(np.asarray(kernel.weights), [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.testing.assert_array_equal(np.asarray(K.resolve(str(csv)).weights), [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_npy_kernel_and_filter_bank(tmp_path):
    kernel2d = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(tmp_path / "k.npy", kernel2d)
    bank = np.random.default_rng(1).standard_normal((3, 3, 3, 4)).astype(np.float32)
    np.save(tmp_path / "bank.npy", bank)
    k = K.resolve(str(tmp_path / "k.npy"))
    assert k.weights.dtype == np.float32 and k.size == (2, 3) and k.map_count == 1
    np.testing.assert_array_equal(k.weights, kernel2d)
    b = K.resolve(str(tmp_path / "bank.npy"))
    assert b.label == "bank" and b.size == (3, 3) and b.map_count == 4
    np.testing.assert_array_equal(b.weights, bank)


@pytest.mark.parametrize(
    "content,fragment",
    [
        (np.zeros((3, 3, 3)), "expected (fh, fw) or (fh, fw, in, out)"),
        (np.zeros((3,)), "expected (fh, fw)"),
        (np.array([[1.0, np.nan]]), "finite"),
        (np.array([[1.0, np.inf]]), "finite"),
        (np.array([[1.0, 1e39]]), "within float32 range"),
        (np.array([["a", "b"]]), "expected numbers"),
        (np.zeros((0, 3)), "expected (fh, fw)"),
    ],
)
def test_bad_npy_files(tmp_path, content, fragment):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(ValueError) as info:
        K.resolve(str(path))
    assert fragment in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    "text,fragment",
    [("1 2\n3\n", "rows have different lengths"), ("1 x\n", "'x' is not a number"), ("# nothing\n", "no numbers"),
     ("1 nan\n", "'nan' is not a number")],
)
def test_bad_text_files(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        K.resolve(str(path))
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_corrupt_npy_and_binary_text(tmp_path):
    npy = tmp_path / "broken.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="not a readable .npy"):
        K.resolve(str(npy))
    txt = tmp_path / "binary.txt"
    txt.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match="cannot be read"):
        K.resolve(str(txt))


def test_format_grid_prints_every_value():
    text = K.format_grid(K.builtin("sobel-x"))
    assert [line.split() for line in text.splitlines()] == [["-1", "0", "1"], ["-2", "0", "2"], ["-1", "0", "1"]]


@pytest.mark.parametrize("spec", ["1,,2", "1,0,", ",1"])
def test_empty_cells_in_a_matrix_are_rejected(spec):
    with pytest.raises(ValueError, match="empty value"):
        K.resolve(spec)
