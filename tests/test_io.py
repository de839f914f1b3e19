"""Reading images into float32 [0, 1] and writing maps, against Pillow and numpy directly."""

import io as stdio
import os

import numpy as np
import pytest
from PIL import Image

from convfilter import io
from convfilter.probe import image_size

RNG = np.random.default_rng(7)


def save(image, path, fmt=None, **options):
    image.save(path, format=fmt, **options)
    return str(path)


def u8(shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


# --- modes -----------------------------------------------------------------------------------


def test_mode_1_becomes_zero_or_one(tmp_path):
    bits = RNG.integers(0, 2, (5, 7)).astype(bool)
    path = save(Image.fromarray(bits), tmp_path / "bits.png")
    assert Image.open(path).mode == "1"
    array = io.load(path).array
    assert array.shape == (5, 7, 1) and array.dtype == np.float32
    np.testing.assert_array_equal(array[:, :, 0], bits.astype(np.float32))


def test_mode_L_is_divided_by_255(tmp_path):
    pixels = u8((6, 4))
    array = io.load(save(Image.fromarray(pixels, "L"), tmp_path / "gray.png")).array
    assert array.shape == (6, 4, 1)
    np.testing.assert_array_equal(array[:, :, 0], pixels.astype(np.float32) / np.float32(255))
    assert array.min() >= 0 and array.max() <= 1


def test_mode_LA_drops_alpha(tmp_path):
    pixels = u8((6, 4, 2))
    path = save(Image.fromarray(pixels, "LA"), tmp_path / "la.png")
    assert Image.open(path).mode == "LA"
    array = io.load(path).array
    assert array.shape == (6, 4, 1)
    np.testing.assert_array_equal(array[:, :, 0], pixels[:, :, 0] / np.float32(255))


def test_mode_P_becomes_the_palette_colours(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], np.uint8)
    indices = RNG.integers(0, 3, (5, 6)).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    array = io.load(save(image, tmp_path / "pal.png")).array
    assert array.shape == (5, 6, 3)
    np.testing.assert_array_equal(array, palette[indices] / np.float32(255))


def test_mode_RGB_and_RGBA(tmp_path):
    rgba = u8((4, 5, 4))
    rgb_path = save(Image.fromarray(rgba[:, :, :3], "RGB"), tmp_path / "rgb.png")
    rgba_path = save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    expected = rgba[:, :, :3] / np.float32(255)
    np.testing.assert_array_equal(io.load(rgb_path).array, expected)
    np.testing.assert_array_equal(io.load(rgba_path).array, expected)  # alpha dropped, colours untouched


def test_mode_CMYK_becomes_RGB(tmp_path):
    image = Image.new("CMYK", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))  # no ink: white
    image.putpixel((1, 0), (255, 0, 0, 0))  # full cyan: no red
    image.putpixel((2, 0), (0, 0, 0, 255))  # full black
    path = save(image, tmp_path / "cmyk.tif")
    assert Image.open(path).mode == "CMYK"
    array = io.load(path).array
    assert array.shape == (1, 3, 3)
    np.testing.assert_array_equal(array[0], [[1, 1, 1], [0, 1, 1], [0, 0, 0]])


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_mode_I16_is_divided_by_65535(tmp_path, fmt):
    pixels = RNG.integers(0, 65536, (5, 3)).astype(np.uint16)
    pixels[0, 0], pixels[0, 1] = 0, 65535
    path = save(Image.fromarray(pixels), tmp_path / f"deep.{fmt.lower()}", fmt)
    assert Image.open(path).mode.startswith("I")
    array = io.load(path).array
    assert array.shape == (5, 3, 1) and array.dtype == np.float32
    np.testing.assert_allclose(array[:, :, 0], pixels / 65535.0, rtol=1e-6)
    assert array[0, 0, 0] == 0 and array[0, 1, 0] == 1


@pytest.mark.parametrize("mode,channels", [("1", 1), ("L", 1), ("LA", 1), ("P", 3), ("RGB", 3), ("RGBA", 3),
                                           ("CMYK", 3), ("I;16", 1)])
def test_shape_probe_agrees_with_load(tmp_path, mode, channels):
    image = Image.new(mode, (7, 4))
    path = save(image, tmp_path / ("x.tif" if mode == "CMYK" else "x.png"))
    assert io.load(path).array.shape == (4, 7, channels)
    assert image_size(path) == (4, 7, channels)


# --- EXIF orientation ---------------------------------------------------------------------------


def test_exif_orientation_6_is_rotated_clockwise(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)  # 16 rows x 32 columns, bright block at the top-left
    stored[:8, :8] = 255
    stored[8:, 24:] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(Image.fromarray(stored), tmp_path / "phone.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    decoded = np.asarray(Image.open(path))  # Pillow does not rotate on open: the stored pixels
    assert decoded.shape == (16, 32, 3)
    array = io.load(path).array
    assert array.shape == (32, 16, 3)
    np.testing.assert_array_equal(array, np.rot90(decoded, k=-1) / np.float32(255))
    assert array[:8, -8:].mean() > 0.9  # the top-left block is now at the top-right
    assert image_size(path) == (32, 16, 3)


# --- .npy and stdin -------------------------------------------------------------------------------


def test_npy_inputs_are_raw_float32(tmp_path):
    maps = RNG.standard_normal((5, 6, 4)) * 100
    np.save(tmp_path / "maps.npy", maps)
    np.save(tmp_path / "plane.npy", maps[:, :, 0])
    loaded = io.load(str(tmp_path / "maps.npy"))
    assert loaded.stem == "maps" and loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, maps.astype(np.float32))  # not scaled
    np.testing.assert_array_equal(io.load(str(tmp_path / "plane.npy")).array, maps[:, :, :1].astype(np.float32))


@pytest.mark.parametrize(
    "content,fragment",
    [(np.zeros((2, 3, 4, 5)), "expected (H, W) or (H, W, C)"), (np.array([[np.nan]]), "NaN"),
     (np.array([["a"]]), "expected numbers"), (np.zeros(5), "expected (H, W)")],
)
def test_bad_npy_inputs(tmp_path, content, fragment):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(io.InputError) as info:
        io.load(str(tmp_path / "bad.npy"))
    assert fragment in str(info.value)


def test_stdin_bytes_image_and_npy(tmp_path):
    pixels = u8((4, 5, 3))
    path = save(Image.fromarray(pixels), tmp_path / "in.png")
    data = open(path, "rb").read()
    from_stdin = io.load("-", data)
    assert from_stdin.stem == "stdin"
    np.testing.assert_array_equal(from_stdin.array, io.load(path).array)
    # the bytes are read from a stdin-like stream when not given
    assert io.read_source("-", stdio.BytesIO(data)) == data
    assert io.read_source(path) is None
    maps = RNG.standard_normal((3, 2, 2)).astype(np.float32)
    buffer = stdio.BytesIO()
    np.save(buffer, maps)
    np.testing.assert_array_equal(io.load("-", buffer.getvalue()).array, maps)


def test_unreadable_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    png = open(save(Image.fromarray(u8((40, 40, 3))), tmp_path / "full.png"), "rb").read()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    cases = [
        (tmp_path / "missing.png", "no such file"),
        (tmp_path, "is a folder"),
        (tmp_path / "notes.txt", "not an image"),
        (tmp_path / "cut.png", "cannot decode"),
    ]
    for path, fragment in cases:
        with pytest.raises(io.InputError, match=fragment):
            io.load(str(path))
    with pytest.raises(io.InputError, match="stdin is empty"):
        io.load("-", b"")


# --- encoding ---------------------------------------------------------------------------------


def decode(payload):
    return Image.open(stdio.BytesIO(payload))


def test_png_minmax_round_trip():
    data = (RNG.standard_normal((9, 11, 1)) * 5).astype(np.float32)
    image = decode(io.encode(data, "png"))
    assert image.format == "PNG" and image.mode == "L" and image.size == (11, 9)
    d = data[:, :, 0].astype(np.float64)
    want = np.round((d - d.min()) / (d.max() - d.min()) * 255)
    got = np.asarray(image).astype(np.float64)
    assert np.abs(got - want).max() <= 1 and got.min() == 0 and got.max() == 255
    assert image.text["Software"].startswith("convfilter")


def test_png_normalizations():
    data = np.array([[-2.0, -0.5, 0.0, 0.25, 1.0, 3.0]], np.float32)[:, :, None]
    clip = np.asarray(decode(io.encode(data, "png", "clip")))[0]
    np.testing.assert_array_equal(clip, [0, 0, 0, 64, 255, 255])  # 0.25 * 255 = 63.75 -> 64
    absolute = np.asarray(decode(io.encode(data, "png", "abs")))[0]
    np.testing.assert_array_equal(absolute, np.round(np.abs(data[0, :, 0]) / 3 * 255))  # |x| / max|x|
    constant = np.asarray(decode(io.encode(np.full((2, 2, 1), 7, np.float32), "png")))
    np.testing.assert_array_equal(constant, 0)  # a constant map is black, not a division by zero


def test_png_colour_and_metadata():
    data = RNG.random((4, 4, 3)).astype(np.float32)
    image = decode(io.encode(data, "png", "clip", {io.MARK_KEY: '{"kernels": ["box"]}'}))
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), np.round(data * 255).astype(np.uint8))
    assert image.text[io.MARK_KEY] == '{"kernels": ["box"]}'


def test_png16_round_trip():
    data = (RNG.standard_normal((7, 5, 1)) * 3).astype(np.float32)
    image = decode(io.encode(data, "png16"))
    assert image.mode.startswith("I") and image.size == (5, 7)
    d = data[:, :, 0].astype(np.float64)
    want = np.round((d - d.min()) / (d.max() - d.min()) * 65535)
    assert np.abs(np.asarray(image).astype(np.float64) - want).max() <= 1


def test_tiff_float32_is_raw():
    data = (RNG.standard_normal((6, 8, 1)) * 1000).astype(np.float32)
    image = decode(io.encode(data, "tiff"))
    assert image.format == "TIFF" and image.mode == "F"
    np.testing.assert_array_equal(np.asarray(image), data[:, :, 0])


def test_npy_is_raw():
    data = RNG.standard_normal((6, 8, 5)).astype(np.float32)
    back = np.load(stdio.BytesIO(io.encode(data, "npy")))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("fmt,channels", [("png", 2), ("png", 4), ("png16", 3), ("tiff", 3)])
def test_formats_refuse_channel_counts_they_cannot_hold(fmt, channels):
    with pytest.raises(ValueError, match="-f npy"):
        io.encode(np.zeros((2, 2, channels), np.float32), fmt)


# --- atomic writes ---------------------------------------------------------------------------------


def test_write_atomic_leaves_only_the_file(tmp_path):
    target = tmp_path / "out.png"
    io.write_atomic(str(target), b"first")
    io.write_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["out.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.write_atomic(str(target), b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.png"]


def test_write_atomic_into_a_missing_folder_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.write_atomic(str(tmp_path / "nowhere" / "out.png"), b"x")
    assert os.listdir(tmp_path) == []
