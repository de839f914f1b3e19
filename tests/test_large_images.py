"""The pieces that make large photos cheap: the PNG writer, 8-bit samples read without a float copy,
and PNG scaling in place. Each is checked against the plain way it replaces."""

import io as _io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from convfilter import io, ops, png
from convfilter.scaling import normalize, to_pixels

CHINA = Path(__file__).resolve().parent.parent / "sample_images" / "china.jpg"


def read_png(data: bytes) -> tuple[np.ndarray, Image.Image]:
    image = Image.open(_io.BytesIO(data))
    image.load()
    return np.asarray(image), image


@settings(max_examples=60, deadline=None)
@given(pixels=hnp.arrays(st.sampled_from([np.uint8, np.uint16]),
                         st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 3, 4]))),
       level=st.integers(0, 9), threads=st.integers(1, 3))
def test_pillow_reads_back_exactly_the_pixels_written(pixels, level, threads):
    if pixels.dtype == np.uint16 and pixels.shape[2] != 1:
        pixels = pixels[:, :, :1]  # Pillow reads 16-bit gray only
    back, image = read_png(png.encode(pixels, {"Software": "test"}, level, threads))
    expected = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    np.testing.assert_array_equal(back.astype(pixels.dtype), expected)
    assert image.info["Software"] == "test"


def test_a_large_image_deflated_in_pieces_on_threads_is_one_valid_stream(monkeypatch):
    monkeypatch.setattr(png, "PIECE_BYTES", 1000)  # many pieces from a small image
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (97, 61, 3), dtype=np.uint8)
    pixels[40:] = 7  # runs that a piece boundary cuts
    for threads in (1, 2, 4):
        back, _ = read_png(png.encode(pixels, None, 6, threads))
        np.testing.assert_array_equal(back, pixels)


def test_text_that_latin1_cannot_hold_is_written_as_utf8():
    _, image = read_png(png.encode(np.zeros((2, 2), np.uint8), {"convfilter": '{"kernels": ["кернел.npy"]}'}))
    assert image.info["convfilter"] == '{"kernels": ["кернел.npy"]}'


@pytest.mark.parametrize("bad, error", [(dict(level=10), ValueError), (dict(pixels=np.zeros((2, 2), np.float32)), TypeError),
                                        (dict(pixels=np.zeros((2, 2, 2), np.uint8)), ValueError)])
def test_what_a_png_cannot_hold_is_refused(bad, error):
    arguments = dict(pixels=np.zeros((2, 2), np.uint8), level=4) | bad
    with pytest.raises(error):
        png.encode(arguments["pixels"], None, arguments["level"])


def test_higher_levels_give_smaller_files_for_the_same_pixels():
    gradient = np.add.outer(np.arange(300), np.arange(400)) % 256
    pixels = (gradient + np.random.default_rng(0).integers(0, 4, gradient.shape)).astype(np.uint8)
    sizes = [len(png.encode(pixels, None, level)) for level in (0, 1, 9)]
    assert sizes[0] > sizes[1] >= sizes[2]
    assert sizes[0] > pixels.size  # level 0 stores


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (31, 17, 4), (8, 9, 2)])
@pytest.mark.parametrize("kernel", ["vertical", "dense"])
def test_8bit_samples_give_bit_for_bit_the_float_images_result(shape, kernel):
    rng = np.random.default_rng(sum(shape))
    samples = rng.integers(0, 256, shape, dtype=np.uint8)
    if kernel == "vertical":
        w = np.zeros((7, 7, shape[2], 2), np.float32)
        w[:, 3, :, 0] = 1
        w[3, :, :, 1] = 1
    else:  # the same random 3x3 on every channel: still a channel sum
        w = np.repeat(rng.standard_normal((3, 3, 1, 3)).astype(np.float32), shape[2], axis=2)
    float_image = np.asarray(samples, np.float32) / np.float32(255)
    for strides, padding in [(1, "SAME"), (2, "VALID"), (3, "SAME")]:
        if padding == "VALID" and min(shape[:2]) < w.shape[0]:
            continue
        expected = ops.conv2d(float_image, w, strides, padding, bias=0.25, activation="relu")
        got = ops.conv2d(samples, w, strides, padding, bias=0.25, activation="relu", input_scale=255)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_input_scale_with_different_kernels_per_channel_or_float_input_divides_first():
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 65536, (9, 8, 3), dtype=np.uint16)
    w = rng.standard_normal((3, 3, 3, 2)).astype(np.float32)
    expected = ops.conv2d(samples.astype(np.float32) / np.float32(65535), w)
    np.testing.assert_array_equal(ops.conv2d(samples, w, input_scale=65535), expected)
    np.testing.assert_array_equal(ops.conv2d(samples.astype(np.float32), w, input_scale=65535), expected)
    with pytest.raises(ValueError, match="input_scale must be a positive number"):
        ops.conv2d(samples, w, input_scale=0)


@pytest.mark.parametrize("method", ["minmax", "clip", "abs", "signed"])
def test_scaling_in_place_gives_the_same_pixels_as_on_a_copy(method):
    rng = np.random.default_rng(7)
    for data in (rng.standard_normal((13, 11, 1)).astype(np.float32) * 3, np.zeros((4, 4, 1), np.float32),
                 rng.random((6, 5, 3)).astype(np.float32)):
        copy = data.copy()
        expected = to_pixels(copy, method)
        np.testing.assert_array_equal(copy, data)  # without overwrite the map is left alone
        np.testing.assert_array_equal(to_pixels(data.copy(), method, overwrite=True), expected)
        np.testing.assert_array_equal(normalize(data.copy(), method, overwrite=True), normalize(data, method))


def test_loaded_keeps_the_decoded_samples_and_array_is_the_float_image(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    loaded = io.load(str(tmp_path / "rgb.png"))
    assert loaded.pixels.dtype == np.uint8 and loaded.scale == 255
    np.testing.assert_array_equal(loaded.array, rgb.astype(np.float32) / np.float32(255))


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "convfilter", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_png_compression_changes_the_size_never_the_pixels(tmp_path):
    sizes, maps = {}, {}
    for level in (0, 4, 9):
        done = run_cli("apply", "-k", "vertical", CHINA, "-o", f"out{level}.png", "--png-compression", level,
                       cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        sizes[level] = (tmp_path / f"out{level}.png").stat().st_size
        maps[level] = np.asarray(Image.open(tmp_path / f"out{level}.png"))
    assert sizes[0] > sizes[4] >= sizes[9]
    np.testing.assert_array_equal(maps[0], maps[4])
    np.testing.assert_array_equal(maps[9], maps[4])
    bad = run_cli("apply", "-k", "vertical", CHINA, "--png-compression", "10", cwd=tmp_path)
    assert bad.returncode == 2
    assert "Invalid value for '--png-compression': 10 is not in the range 0<=x<=9." in bad.stderr


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("path, sum_channels, samples", [("separable", True, "uint8"), ("planar", True, "uint8"),
                                                         ("separable", False, "float"), ("planar", False, "float"),
                                                         ("separable", True, "float")])
def test_a_large_image_padded_piece_by_piece_gives_the_bits_of_the_whole_copy(monkeypatch, backend, path,
                                                                               sum_channels, samples):
    """The padded copy of a large image is made a few rows at a time: both paths, any stride,
    dilation, padding and band split give the same bits as one copy of the whole image."""
    from test_backends import assert_same_bits

    from convfilter import conv_paths
    from convfilter import threads as thread_pool
    from convfilter.conv_paths import correlate
    from convfilter.geometry import axis

    rng = np.random.default_rng(len(path) + sum_channels)
    x = rng.integers(0, 256, (2, 45, 38, 3), dtype=np.uint8)
    x.flags.writeable = False  # as decoded images are
    if samples == "float":
        x = x.astype(np.float32) / np.float32(255)
    # rank 1 and the same on every channel, with weights whose sums round differently in another order
    per_filter = np.einsum("i,j,f->ijf", rng.standard_normal(5), rng.standard_normal(3), rng.standard_normal(3))
    w = np.ascontiguousarray(np.repeat(per_filter[:, :, None, :], 3, axis=2), np.float32)
    pieces = []
    real_pieces = conv_paths._pieces_of_band
    monkeypatch.setattr(conv_paths, "_pieces_of_band", lambda *args: pieces.append(args[-2:]) or real_pieces(*args))
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)  # bands on threads even for a small image
    ops.set_backend(backend)
    try:
        for threads in (1, 3):
            ops.set_num_threads(threads)
            for strides, dilations, padding in [(1, 1, "SAME"), (2, 1, "SAME"), (1, 2, "VALID"), (3, 2, ((7, 2), (1, 4)))]:
                gh = axis(45, 5, strides, padding if isinstance(padding, str) else padding[0], dilations)
                gw = axis(38, 3, strides, padding if isinstance(padding, str) else padding[1], dilations)

                def run():
                    return correlate(x, w, (strides, strides), (dilations, dilations), gh, gw, path=path,
                                     sum_channels=sum_channels, bias=np.full(3, 0.5, np.float32),
                                     input_scale=255 if samples == "uint8" else None)

                monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 1 << 40)
                whole = run()
                monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 0)
                monkeypatch.setattr(conv_paths, "PIECE_BYTES", 1)  # the fewest rows a piece may hold
                count = len(pieces)
                assert_same_bits(run(), whole)
                assert len(pieces) > count
    finally:
        ops.set_backend("auto")
        ops.set_num_threads(None)


@pytest.mark.parametrize("strides", [1, 2])
def test_bands_narrower_than_a_piece_copy_only_the_rows_they_read(monkeypatch, strides):
    """Each band makes its own pieces of the padded copy: when the bands are narrower than a
    piece, a piece covers its band and copies only the image rows that band's outputs read (it
    copied a whole piece's rows before, several times the image), with the bits of one whole copy."""
    from test_backends import assert_same_bits

    from convfilter import _backend, conv_paths
    from convfilter import threads as thread_pool
    from convfilter.conv_paths import correlate
    from convfilter.geometry import axis

    rng = np.random.default_rng(strides)
    x = rng.standard_normal((1, 200, 40, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
    gh, gw = axis(200, 3, strides, "SAME", 1), axis(40, 3, strides, "SAME", 1)
    copied = []
    real_kernel = _backend.kernel

    def counting(name, work):
        kernel = real_kernel(name, work)
        if not name.startswith("pad_planar"):
            return kernel
        return lambda source, *rest: (copied.append(source.shape[1]), kernel(source, *rest))[1]

    def run():
        return correlate(x, w, (strides, strides), (1, 1), gh, gw, path="planar")

    whole = run()
    monkeypatch.setattr(_backend, "kernel", counting)
    monkeypatch.setattr(thread_pool, "MIN_PARALLEL_WORK", 0)  # a band per output row or two
    monkeypatch.setattr(conv_paths, "WHOLE_COPY_BYTES", 0)
    monkeypatch.setattr(conv_paths, "PIECE_BYTES", 60 * 42 * 3 * 4)  # pieces of about 60 rows
    edges = thread_pool.band_edges(gh.out, 1.0)
    widest = max(b - a for a, b in zip(edges, edges[1:]))
    assert conv_paths._piece_rows(3, gh.out * strides + 2, 42, gh.out, strides, 3, 1) > widest
    assert_same_bits(run(), whole)
    assert len(copied) == len(edges) - 1  # a piece per band
    most = (-(-widest // 4) * 4 - 1) * strides + 3  # the rows a band's outputs read, its rows rounded up to four
    assert max(copied) <= most and sum(copied) <= 200 + (len(edges) - 1) * 6


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16", "I", "F", "RGBA", "CMYK", "P", "1", "LA"])
def test_a_large_image_read_out_of_pillow_by_bands_gives_its_samples(monkeypatch, mode):
    rng = np.random.default_rng(5)
    image = Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)).convert(mode)
    expected = io.image_samples(image)
    monkeypatch.setattr(io, "BAND_BYTES", 50)  # a few rows per band
    got = io.image_samples(image)
    assert got[1] == expected[1]
    assert got[0].dtype == expected[0].dtype and not got[0].flags.writeable
    np.testing.assert_array_equal(got[0], expected[0])


def test_an_upright_photo_is_not_copied_to_apply_its_orientation(tmp_path, monkeypatch):
    """Pillow's ``exif_transpose`` copies the whole image when there is nothing to turn; a rotated
    photo is still turned."""
    from PIL import ImageOps

    pixels = np.random.default_rng(8).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise: shown turned back
    Image.fromarray(pixels).save(tmp_path / "turned.png", exif=exif)
    Image.fromarray(pixels).save(tmp_path / "upright.png")
    copies = []
    real_copy = Image.Image.copy
    monkeypatch.setattr(Image.Image, "copy", lambda self: copies.append(self.size) or real_copy(self))
    np.testing.assert_array_equal(io.load(str(tmp_path / "upright.png")).pixels, pixels)
    assert copies == []
    with Image.open(tmp_path / "turned.png") as image:
        expected = np.asarray(ImageOps.exif_transpose(image))
    assert expected.shape == (9, 6, 3)
    np.testing.assert_array_equal(io.load(str(tmp_path / "turned.png")).pixels, expected)
