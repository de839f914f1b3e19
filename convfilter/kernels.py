"""Named kernels, kernel specs and kernel files.

Kernels are plain nested tuples of floats so that listing and showing them
costs no numpy import. Each built-in is a small generator; derivative
kernels are written as the outer product of a smoothing and a difference
part, as scikit-image does.

All kernels are applied as TensorFlow applies them: by cross-correlation,
without flipping. ``sobel-x`` therefore responds positively where the image
gets brighter to the right.

Sizes: every kernel may be odd or even, as TensorFlow allows. An even kernel
has no middle cell; the built-ins put their line or centre at ``(size - 1) // 2``,
the cell that SAME padding (the odd padding cell after) lines up with each
output pixel, so ``identity:4`` returns the input as ``identity:3`` does.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

Grid = tuple[tuple[float, ...], ...]

MAX_SIZE = 255  # built-in kernels; larger sizes are a typo more often than a wish
MAX_FILE_VALUES = 1 << 26  # a .npy kernel file (256 MB of float32; keras banks are far smaller)
FLOAT32_MAX = 3.4028234663852886e38  # kernels are float32: a larger value would become infinity


def outer(column, row) -> Grid:
    """The rank-1 grid ``column[:, None] * row[None, :]``."""
    return tuple(tuple(float(a) * float(b) for b in row) for a in column)


def _middle(size: int) -> int:
    """The centre cell of an odd size; for an even size the one before the centre, which SAME
    padding aligns with the output pixel (it puts the odd padding cell at the bottom/right)."""
    return (size - 1) // 2


def _filled(size: int, cells) -> Grid:
    ones = set(cells)
    return tuple(tuple(1.0 if (r, c) in ones else 0.0 for c in range(size)) for r in range(size))


def vertical(size: int = 7) -> Grid:
    """The book's vertical line filter: ones in the middle column."""
    return _filled(size, ((r, _middle(size)) for r in range(size)))


def horizontal(size: int = 7) -> Grid:
    """The book's horizontal line filter: ones in the middle row."""
    return _filled(size, ((_middle(size), c) for c in range(size)))


def diagonal(size: int = 7) -> Grid:
    """Ones on the main diagonal (top-left to bottom-right)."""
    return _filled(size, ((k, k) for k in range(size)))


def antidiagonal(size: int = 7) -> Grid:
    """Ones on the anti-diagonal (top-right to bottom-left)."""
    return _filled(size, ((k, size - 1 - k) for k in range(size)))


def identity(size: int = 3) -> Grid:
    """A single one in the centre: returns the input unchanged (with SAME padding)."""
    return _filled(size, [(_middle(size), _middle(size))])


def box(size: int = 3) -> Grid:
    """Mean over a size x size window."""
    return outer([1.0 / size] * size, [1.0 / size] * size)


def gaussian_1d(size: int, sigma: float) -> tuple[float, ...]:
    """Sampled Gaussian of ``size`` taps, normalised to sum 1."""
    centre = (size - 1) / 2
    taps = [math.exp(-((k - centre) ** 2) / (2 * sigma * sigma)) for k in range(size)]
    total = sum(taps)
    return tuple(t / total for t in taps)


def gaussian(size: int = 5, sigma: float | None = None) -> Grid:
    """Normalised Gaussian blur; sigma defaults to OpenCV's rule for the size."""
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    taps = gaussian_1d(size, sigma)
    return outer(taps, taps)


_DIFF = (-1.0, 0.0, 1.0)


def sobel_x() -> Grid:
    return outer((1, 2, 1), _DIFF)


def sobel_y() -> Grid:
    return outer(_DIFF, (1, 2, 1))


def scharr_x() -> Grid:
    return outer((3, 10, 3), _DIFF)


def scharr_y() -> Grid:
    return outer(_DIFF, (3, 10, 3))


def prewitt_x() -> Grid:
    return outer((1, 1, 1), _DIFF)


def prewitt_y() -> Grid:
    return outer(_DIFF, (1, 1, 1))


LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
SHARPEN = ((0.0, -1.0, 0.0), (-1.0, 5.0, -1.0), (0.0, -1.0, 0.0))
EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))
OUTLINE = ((-1.0, -1.0, -1.0), (-1.0, 8.0, -1.0), (-1.0, -1.0, -1.0))


@dataclass(frozen=True)
class Builtin:
    """A named kernel: how to build it and which spec suffixes it takes."""

    build: Callable[..., Grid]
    summary: str
    sizes: str = "fixed"  # "fixed" or "any" (odd or even, as TensorFlow takes both)
    takes_sigma: bool = False

    def make(self, args: list[str], name: str) -> Grid:
        if self.sizes == "fixed" and args:
            raise ValueError(f"kernel '{name}' has a fixed size and takes no ':' arguments")
        limit = 2 if self.takes_sigma else 1
        if len(args) > limit:
            usage = f"{name}:SIZE:SIGMA" if self.takes_sigma else f"{name}:SIZE"
            raise ValueError(f"too many ':' arguments in '{name}:{':'.join(args)}'; use {usage}")
        params: list[Any] = []
        if args:
            params.append(_parse_size(args[0], name))
        if len(args) == 2:
            params.append(_parse_sigma(args[1], name))
        return self.build(*params)


def _parse_size(text: str, name: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise ValueError(f"size in '{name}:{text}' must be a whole number, e.g. {name}:5")
    size = int(text)
    if not 1 <= size <= MAX_SIZE:
        raise ValueError(f"size in '{name}:{text}' must be between 1 and {MAX_SIZE}")
    return size


def _parse_sigma(text: str, name: str) -> float:
    try:
        sigma = float(text)
    except ValueError:
        sigma = float("nan")
    if not (math.isfinite(sigma) and 0 < sigma <= 1000):
        raise ValueError(f"sigma in '{name}:...:{text}' must be a number > 0, e.g. {name}:9:2.0")
    return sigma


REGISTRY: dict[str, Builtin] = {
    "vertical": Builtin(vertical, "7x7 middle column of ones (the book's vertical line filter)", "any"),
    "horizontal": Builtin(horizontal, "7x7 middle row of ones (the book's horizontal line filter)", "any"),
    "diagonal": Builtin(diagonal, "7x7 ones on the main diagonal", "any"),
    "antidiagonal": Builtin(antidiagonal, "7x7 ones on the anti-diagonal", "any"),
    "sobel-x": Builtin(sobel_x, "3x3 Sobel derivative along x (positive where brightness rises to the right)"),
    "sobel-y": Builtin(sobel_y, "3x3 Sobel derivative along y (positive where brightness rises downward)"),
    "scharr-x": Builtin(scharr_x, "3x3 Scharr derivative along x"),
    "scharr-y": Builtin(scharr_y, "3x3 Scharr derivative along y"),
    "prewitt-x": Builtin(prewitt_x, "3x3 Prewitt derivative along x"),
    "prewitt-y": Builtin(prewitt_y, "3x3 Prewitt derivative along y"),
    "laplacian": Builtin(lambda: LAPLACIAN, "3x3 Laplacian (4-neighbour)"),
    "gaussian": Builtin(gaussian, "5x5 Gaussian blur, sum 1 (gaussian:SIZE:SIGMA)", "any", True),
    "box": Builtin(box, "3x3 mean (box blur), sum 1", "any"),
    "sharpen": Builtin(lambda: SHARPEN, "3x3 sharpen"),
    "emboss": Builtin(lambda: EMBOSS, "3x3 emboss"),
    "outline": Builtin(lambda: OUTLINE, "3x3 outline (8-neighbour Laplacian)"),
    "identity": Builtin(identity, "3x3 identity: returns the input", "any"),
}

KERNEL_FILE_SUFFIXES = (".npy", ".txt", ".csv")


@dataclass(frozen=True)
class Kernel:
    """A resolved ``--kernel``: a label for file names and its weights.

    ``weights`` is a 2-D grid (nested tuples) or, for ``.npy`` files, a numpy
    array of shape ``(fh, fw)`` or ``(fh, fw, in, out)``.
    """

    label: str
    weights: Any
    spec: str

    @property
    def size(self) -> tuple[int, int]:
        """``(fh, fw)``."""
        if hasattr(self.weights, "shape"):
            return tuple(int(n) for n in self.weights.shape[:2])
        return len(self.weights), len(self.weights[0])

    @property
    def map_count(self) -> int:
        """Feature maps this kernel makes: 1, or ``out`` for a 4-D filter bank."""
        shape = getattr(self.weights, "shape", ())
        return int(shape[3]) if len(shape) == 4 else 1


def looks_out_first(shape: tuple[int, ...], in_channels: int) -> bool:
    """True when a filter shape, read as ``(fh, fw, in, out)`` for an input of ``in_channels``
    channels, looks rather like PyTorch's ``(out, in, kh, kw)``: its second axis is the channel
    count and its last two a square kernel, while read as ``(fh, fw, in, out)`` it either does
    not fit the input or is a non-square kernel (``(8, 3, 3, 3)`` on RGB: 8x3 kernels). PyTorch
    kernels of 1x1 and 2x2 are rare here, so ``(3, 3, 1, 1)`` or ``(1, 2, 2, 2)`` are taken as
    they are."""
    if len(shape) != 4:
        return False
    fh, fw, n_in, n_out = shape
    return fw == in_channels and n_in == n_out > 2 and (n_in != in_channels or fh != fw)


OUT_FIRST_HINT = ("the shape looks like PyTorch's (out, in, kh, kw); filters here are (fh, fw, in, out), "
                  "as TensorFlow's: np.transpose(filters, (2, 3, 1, 0)) converts them")


def similar_names(name: str) -> list[str]:
    import difflib  # only when a name is unknown

    return difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)


def builtin(spec: str) -> Grid:
    """The grid of a built-in kernel spec such as ``"vertical"`` or ``"gaussian:9:2"``.

    Raises ValueError naming close matches for unknown names.
    """
    name, *args = spec.strip().split(":")
    name = name.strip().lower()
    if name not in REGISTRY:
        hint = similar_names(name)
        suggestion = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
        raise ValueError(
            f"unknown kernel '{name}'{suggestion} (see 'convfilter kernels'; "
            "a matrix looks like '1,0,-1;2,0,-2;1,0,-1')"
        )
    return REGISTRY[name].make(args, name)


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_matrix(text: str, source: str = "kernel") -> Grid:
    """Parse rows separated by ``;`` or newlines, values by ``,`` or blanks.

    ``#`` starts a comment. Every row must have the same length.

    Examples
    --------
    >>> parse_matrix("1,0,-1; 2,0,-2")
    ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0))
    """
    rows = []
    for line in re.split(r"[;\n]", text):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = re.split(r"\s*,\s*|\s+", line)
        for cell in cells:
            if not cell:
                raise ValueError(f"{source}: empty value in row '{line}'; separate numbers by one comma")
            if not re.fullmatch(_NUMBER, cell):
                raise ValueError(f"{source}: '{cell}' is not a number")
        rows.append(tuple(float(c) for c in cells))
    if not rows:
        raise ValueError(f"{source}: no numbers found")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{source}: rows have different lengths {sorted(widths)}; a kernel must be rectangular")
    return check_grid(tuple(rows), source)


def check_grid(grid: Grid, source: str) -> Grid:
    for row in grid:
        for value in row:
            if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise ValueError(f"{source}: kernel values must be finite and within float32 range "
                                 f"(|w| <= 3.4e38), found {value}")
    return grid


def _looks_like_matrix(spec: str) -> bool:
    return bool(re.fullmatch(r"[\s\d.,;eE+\-#]+", spec)) and any(ch.isdigit() for ch in spec)


def builtin_label(spec: str) -> str:
    """The label of a built-in spec, normalised: ``Vertical`` -> ``vertical``, ``gaussian:9:2`` ->
    ``gaussian-9-2`` (``:`` is not allowed in file names everywhere)."""
    name, *args = spec.strip().split(":")
    return "-".join([name.strip().lower(), *(a.strip() for a in args)])


def file_label(path: str) -> str:
    """The label of a kernel file: its name without the extension, as written (``bank_bad.npy`` ->
    ``bank_bad``), with characters that some file systems refuse (``<>:"/\\|?*``, control
    characters) replaced by ``-``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return re.sub(r'[<>:"/\\|?*\x00-\x1f]+', "-", stem).strip() or "kernel"


def resolve(spec: str) -> Kernel:
    """Turn one ``--kernel`` value into a Kernel.

    Order: a built-in name (with ``:SIZE[:SIGMA]``), then an existing file
    (``.npy``, ``.txt``, ``.csv``), then an inline matrix.
    """
    text = spec.strip()
    if not text:
        raise ValueError("empty kernel; give a name such as 'vertical' or a matrix such as '1,0,-1'")
    head = text.split(":", 1)[0].strip().lower()
    if head in REGISTRY:
        return Kernel(builtin_label(text), builtin(text), spec)
    if text.lower().endswith(KERNEL_FILE_SUFFIXES) or os.path.isfile(text):
        return Kernel(file_label(text), load_file(text), spec)
    if _looks_like_matrix(text):
        return Kernel("custom", parse_matrix(text, f"kernel '{text}'"), spec)
    return Kernel("", builtin(text), spec)  # raises with a "did you mean"


def load_file(path: str):
    """Read a kernel file: ``.npy`` (2-D kernel or 4-D filter bank) or text rows."""
    if not os.path.isfile(path):
        raise ValueError(f"kernel file '{path}' not found")
    if path.lower().endswith(".npy"):
        import numpy as np

        from .npy import declared_shape

        try:
            # the declared shape first (mapped, nothing read): a damaged or hostile header
            # must not make numpy allocate gigabytes
            declared = declared_shape(path)
            if math.prod(declared) > MAX_FILE_VALUES:
                raise ValueError(f"shape {declared} has more than {MAX_FILE_VALUES:,} values; "
                                 "that is not a kernel or filter bank")
            weights = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises several types for a bad file
            raise ValueError(f"kernel file '{path}' is not a readable .npy array: {exc}") from None
        if weights.ndim not in (2, 4) or weights.size == 0:
            raise ValueError(
                f"kernel file '{path}' holds shape {weights.shape}; expected (fh, fw) or (fh, fw, in, out)"
            )
        if weights.dtype.kind not in "biuf":
            raise ValueError(f"kernel file '{path}' holds {weights.dtype} values; expected numbers")
        if not (np.isfinite(weights).all() and np.abs(weights).max() <= FLOAT32_MAX):
            raise ValueError(f"kernel file '{path}': kernel values must be finite and within float32 range "
                             "(|w| <= 3.4e38)")
        return weights.astype(np.float32)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"kernel file '{path}' cannot be read: {exc}") from None
    return parse_matrix(text, f"kernel file '{path}'")


def format_grid(grid: Grid) -> str:
    """The grid as aligned text, one row per line."""
    cells = [[f"{v:.6g}" for v in row] for row in grid]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)
