"""Montages, colour maps, the ``shape`` table and the docs' gallery.

The CLI is run through click's CliRunner on real files, and every PNG is read
back with Pillow.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from convfilter import montage
from convfilter.cli import cli
from convfilter.colormap import ANCHORS
from convfilter.scaling import normalize
from convfilter.geometry import axis, output_size

ROOT = Path(__file__).resolve().parent.parent
BLUE, WHITE, RED = ANCHORS["diverging"][0], ANCHORS["diverging"][3], ANCHORS["diverging"][-1]


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def read(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def save_npy(path, array) -> Path:
    np.save(path, np.asarray(array, np.float32))
    return path


# --- colour maps -----------------------------------------------------------------------------


def copy_to_png(tmp_path, values, *options) -> np.ndarray:
    """The PNG convfilter draws for a raw map: a 1x1 max pool with stride 1 copies it unchanged."""
    source = save_npy(tmp_path / "map.npy", values)
    out = tmp_path / "map.png"
    run("pool", "--type", "max", "--size", "1", source, "-o", out, *options)
    return read(out)


def test_diverging_puts_zero_on_white_and_the_limits_on_the_ends(tmp_path):
    values = np.array([[-3.0, 0.0, 3.0, 1.5]])[:, :, None]
    pixels = copy_to_png(tmp_path, values, "--colormap", "diverging")
    assert pixels.shape == (1, 4, 3)
    assert tuple(pixels[0, 0]) == BLUE
    assert tuple(pixels[0, 1]) == WHITE
    assert tuple(pixels[0, 2]) == RED
    # half-way to the positive limit: a light red, between white and red in every channel
    assert all(min(w, r) <= p <= max(w, r) for p, w, r in zip(pixels[0, 3], WHITE, RED))
    assert tuple(pixels[0, 3]) not in (WHITE, RED)


def test_diverging_limits_are_symmetric_so_zero_stays_white_for_lopsided_maps(tmp_path):
    values = np.array([[-1.0, 0.0, 4.0]])[:, :, None]
    pixels = copy_to_png(tmp_path, values, "--colormap", "diverging")
    assert tuple(pixels[0, 1]) == WHITE and tuple(pixels[0, 2]) == RED
    assert tuple(pixels[0, 0]) != BLUE  # -1 is only a quarter of the way to -max|x| = -4


def test_sequential_maps_span_the_minimum_to_the_maximum(tmp_path):
    values = np.array([[2.0, 5.0, 3.5]])[:, :, None]
    viridis = copy_to_png(tmp_path, values, "--colormap", "viridis")
    assert tuple(viridis[0, 0]) == ANCHORS["viridis"][0]
    assert tuple(viridis[0, 1]) == ANCHORS["viridis"][-1]
    gray = copy_to_png(tmp_path, values)  # the default stays the book's gray min-max
    assert gray.shape == (1, 3) and gray.tolist() == [[0, 255, 128]]


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, (3, 4, 1), elements=st.floats(-1e3, 1e3, width=32)))
def test_signed_normalization_is_antisymmetric_about_the_middle(data):
    np.testing.assert_allclose(normalize(-data, "signed"), 1 - normalize(data, "signed"), atol=1e-6)
    assert normalize(np.zeros_like(data), "signed").tolist() == np.full_like(data, 0.5).tolist()


def test_a_colour_map_refuses_colour_maps_and_raw_formats(tmp_path):
    colour = save_npy(tmp_path / "rgb.npy", np.random.default_rng(0).random((4, 5, 3)))
    result = run("pool", "--size", "1", colour, "--colormap", "diverging", "-o", tmp_path / "x.png", ok=False)
    assert result.exit_code == 1 and "one-channel" in result.output and not (tmp_path / "x.png").exists()
    result = run("pool", "--size", "1", colour, "--colormap", "viridis", "-f", "npy", ok=False)
    assert result.exit_code == 2 and "-f npy" in result.output


# --- montages ------------------------------------------------------------------------------

H, W = 24, 64
KERNELS = ("sobel-x", "sobel-y", "laplacian", "box")


@pytest.fixture
def image(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    return save_npy(tmp_path / "pic.npy", rng.random((H, W, 1)))


def kernel_options(kernels=KERNELS):
    return [part for k in kernels for part in ("-k", k)]


def background(pixels) -> bool:
    return bool((pixels == montage.BACKGROUND).all())


def test_montage_tiles_are_the_single_maps_in_a_labelled_row(tmp_path, image):
    run("apply", *kernel_options(), image, "-o", tmp_path / "single")
    run("apply", *kernel_options(), image, "--montage", "-o", tmp_path / "grid")
    # named after what it shows: every kernel's label
    name = "pic_" + "+".join(KERNELS) + "_montage.png"
    assert [p.name for p in (tmp_path / "grid").iterdir()] == [name]
    grid = read(tmp_path / "grid" / name)
    gap, strip = montage.GAP, montage.LABEL_HEIGHT
    # four tiles fit one row: one cell high, four cells wide
    assert grid.shape == (gap + strip + H + gap, gap + 4 * (W + gap), 3)
    for index, name in enumerate(KERNELS):
        top, left = gap + strip, gap + index * (W + gap)
        single = read(tmp_path / "single" / f"pic_{name}.png")
        assert single.shape == (H, W)
        np.testing.assert_array_equal(grid[top : top + H, left : left + W], np.repeat(single[:, :, None], 3, 2))
        assert not background(grid[top - strip : top, left : left + W]), f"no label over {name}"
        assert background(grid[top - strip : top, left - gap : left]), "the gap holds no ink"


def test_columns_and_with_input_shape_the_grid(tmp_path, image):
    gap, strip = montage.GAP, montage.LABEL_HEIGHT
    out = tmp_path / "two.png"
    run("apply", *kernel_options(), image, "--montage", "--columns", "2", "-o", out)
    assert read(out).shape == (gap + 2 * (strip + H + gap), gap + 2 * (W + gap), 3)

    out = tmp_path / "five.png"
    run("apply", *kernel_options(), image, "--montage", "--with-input", "-o", out)
    grid = read(out)
    columns = montage.grid_columns(5)
    assert columns == 3  # past one row, the squarest grid: 3 x 2
    assert grid.shape == (gap + 2 * (strip + H + gap), gap + 3 * (W + gap), 3)
    first = grid[gap + strip : gap + strip + H, gap : gap + W, 0]
    np.testing.assert_array_equal(first, np.round(np.load(image)[:, :, 0] * 255))  # the input, unscaled
    empty_top, empty_left = gap + (strip + H + gap), gap + 2 * (W + gap)  # the sixth, unused cell
    assert background(grid[empty_top : empty_top + strip + H, empty_left : empty_left + W])
    assert not background(grid[empty_top : empty_top + strip, empty_left - W - gap : empty_left - gap])


def test_tiles_keep_their_own_size_in_cells_as_large_as_the_largest(tmp_path, image):
    out = tmp_path / "m.png"
    run("apply", "-k", "identity", "-k", "box:5", "-p", "valid", image, "--montage", "-o", out)
    grid = read(out)
    gap, strip = montage.GAP, montage.LABEL_HEIGHT
    assert grid.shape == (gap + strip + (H - 2) + gap, gap + 2 * ((W - 2) + gap), 3)
    # the 5x5 tile is (H-4)x(W-4) at the top-left of its cell; the rest of the cell is background
    top, left = gap + strip, gap + (W - 2) + gap
    assert background(grid[top + H - 4 : top + H - 2, left : left + W - 2])
    assert background(grid[top : top + H - 2, left + W - 4 : left + W - 2])
    assert not background(grid[top : top + H - 4, left : left + W - 4])


def test_one_montage_per_input_named_after_it(tmp_path, image):
    other = save_npy(tmp_path / "other.npy", np.ones((H, W, 1)))
    run("pool", "--size", "2", image, other, "--montage", "--with-input", "-o", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["other_max-pool_montage.png",
                                                                     "pic_max-pool_montage.png"]
    result = run("pool", image, other, "--montage", "-o", tmp_path / "one.png", ok=False)
    assert result.exit_code == 2
    assert result.output == f"Error: 2 inputs cannot all go to the file '{tmp_path / 'one.png'}'; give -o a folder (e.g. -o maps/)\n"


@pytest.mark.parametrize("options, message", [
    (["--columns", "2"], "add --montage"),
    (["--with-input"], "add --montage"),
    (["--montage", "-f", "tiff"], "-f tiff"),
    (["--montage", "--columns", "0"], "--columns"),
    (["--montage", "--pool", "global-avg"], "drop --montage"),
])
def test_montage_options_that_contradict_are_usage_errors(tmp_path, image, options, message):
    result = run("apply", "-k", "box", image, *options, "-o", tmp_path / "out", ok=False)
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


# --- shape -----------------------------------------------------------------------------------

ARITHMETIC = re.compile(r"\((\d+) - (\d+) \+ (\d+) \+ (\d+)\) // (\d+) \+ 1 = (\d+)")


def shape_rows(*args) -> dict[str, list]:
    """The stages of ``convfilter shape``: HxWxC and, per axis, the numbers of the arithmetic."""
    result = run("shape", *args)
    stages, current = {}, None
    for line in result.output.splitlines():
        size = re.search(r"\s(\d+)x(\d+)x(\d+)\s", line + " ")
        found = ARITHMETIC.search(line)
        if size and not line.startswith(" "):
            current = line.split("  ")[0]
            stages[current] = [tuple(int(g) for g in size.groups())]
        if found:
            stages[current].append(tuple(int(g) for g in found.groups()))
    return stages


@pytest.mark.parametrize("height, width", [(7, 8), (8, 7), (427, 640), (5, 5), (6, 6)])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel, size", [("box", 3), ("1,1;1,1", 2), ("vertical:5", 5)])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_shape_numbers_are_output_size(height, width, padding, kernel, size, stride):
    conv_h, conv_w = output_size((height, width), size, stride, padding)
    pool_padding = padding if min(conv_h, conv_w) >= 2 else "same"  # a VALID 2x2 pool needs 2 cells
    stages = shape_rows("--size", f"{height}x{width}x3", "-k", kernel, "-s", stride, "-p", padding,
                        "--pool", "max", "--pool-padding", pool_padding)
    conv_name, pool_name = [name for name in stages if name != "input"]
    assert stages["input"] == [(height, width, 3)]
    assert stages[conv_name][0] == (conv_h, conv_w, 1)
    for (n, f, before, after, s, out), length in zip(stages[conv_name][1:], (height, width)):
        expected = axis(length, size, stride, padding)
        assert (n, f, s, out) == (length, size, stride, expected.out)
        assert (before, after) == (expected.pad_before, expected.pad_after)
        assert (n - f + before + after) // s + 1 == out  # the printed sum is the printed result
    assert stages[pool_name][0] == (*output_size((conv_h, conv_w), 2, 2, pool_padding), 1)
    for (n, f, before, after, s, out), length in zip(stages[pool_name][1:], (conv_h, conv_w)):
        expected = axis(length, 2, 2, pool_padding)
        assert (n, f, before, after, s, out) == (length, 2, expected.pad_before, expected.pad_after, 2, expected.out)


def test_shape_refuses_a_valid_window_larger_than_the_input():
    result = run("shape", "--size", "4x9", "-k", "vertical:5", "-p", "valid", ok=False)
    assert result.exit_code == 2 and "larger than the input size 4" in result.output


def test_shape_counts_maps_and_channels_in_the_depth():
    stages = shape_rows("--size", "9x10x3", "-k", "box", "-k", "sobel-x", "--channels", "each")
    assert stages[next(n for n in stages if n.startswith("conv"))][0] == (9, 10, 6)


def test_shape_and_help_do_not_import_numpy():
    code = ("import sys; from convfilter.cli import main; sys.argv = ['convfilter', 'shape', '--size', "
            "'427x640', '-k', 'vertical', '--pool', 'max']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('numpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


# --- the docs' pictures and examples --------------------------------------------------------

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)|<img[^>]*\ssrc=\"([^\"]+)\"")
DOC_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_images() -> list[Path]:
    """Every image the README and the docs pages show, resolved against the page that shows it."""
    return [(page.parent / (a or b)).resolve() for page in DOC_PAGES
            for a, b in IMAGE_LINK.findall(page.read_text(encoding="utf-8"))]


def test_every_image_the_docs_show_is_in_the_repository():
    shown = shown_images()
    assert len(shown) >= 8, shown  # the gallery is there
    missing = [str(path) for path in shown if not path.is_file()]
    assert not missing


def test_the_gallery_images_are_all_shown_and_small():
    shown = {path.name for path in shown_images()}
    committed = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert {p.name for p in committed} <= shown, "an image in docs/images is on no docs page"
    assert sum(p.stat().st_size for p in committed) < 600_000


def test_the_shape_examples_in_the_docs_are_what_shape_prints():
    text = "".join(page.read_text(encoding="utf-8") for page in DOC_PAGES)
    blocks = re.findall(r"```text\n\$ convfilter (shape [^\n]*)\n(.*?)```", text, re.S)
    assert blocks, "no shape example in the docs"
    for command, printed in blocks:
        assert run(*command.split()).output == printed
