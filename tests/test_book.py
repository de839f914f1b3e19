"""The book's example (Hands-On ML ch. 14): china + flower, 7x7 vertical/horizontal, SAME."""

from pathlib import Path

import numpy as np
from PIL import Image

from convfilter import conv2d
from convfilter.kernels import horizontal, vertical

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def book_images():
    return np.stack([np.asarray(Image.open(SAMPLES / f"{n}.jpg")) for n in ("china", "flower")]) / 255


def book_filters():
    filters = np.zeros((7, 7, 3, 2), dtype=np.float32)
    filters[:, 3, :, 0] = 1  # the book's code, verbatim
    filters[3, :, :, 1] = 1
    return filters


def test_builtin_line_kernels_are_the_books_filters():
    filters = book_filters()
    assert np.array_equal(np.asarray(vertical(), np.float32), filters[:, :, 0, 0])
    assert np.array_equal(np.asarray(horizontal(), np.float32), filters[:, :, 0, 1])


def test_book_example_matches_the_formula_with_shifted_sums():
    images = book_images()
    maps = conv2d(images, book_filters(), strides=1, padding="SAME")
    assert maps.shape == (2, 427, 640, 2) and maps.dtype == np.float32
    # SAME with a 7x7 kernel pads 3 on every side; the vertical map is a sum of 7 row shifts
    padded = np.pad(images.sum(axis=3), ((0, 0), (3, 3), (3, 3)))
    vertical_ref = sum(padded[:, u : u + 427, 3 : 3 + 640] for u in range(7))
    horizontal_ref = sum(padded[:, 3 : 3 + 427, v : v + 640] for v in range(7))
    np.testing.assert_allclose(maps[..., 0], vertical_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(maps[..., 1], horizontal_ref, rtol=1e-5, atol=1e-4)
