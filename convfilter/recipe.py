"""What to do to an image: the options of one run, independent of the CLI.

Pure Python (no numpy), so that ``convfilter shape`` can compute every
stage's size from the same description that ``apply`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .colormap import COLORMAPS
from .geometry import AxisGeometry, axis, axis_padding, check_border, check_pool_padding

if TYPE_CHECKING:  # kernels.py is not needed to describe a recipe (keeps --help light)
    from .kernels import Kernel

# the names of convfilter.ops.ACTIVATIONS (where each one's function is), for the CLI without numpy;
# tests/test_tables.py holds the two equal
ACTIVATIONS = ("none", "relu", "relu6", "abs", "sigmoid", "tanh")
CHANNEL_MODES = ("sum", "each", "gray")
NORMALIZATIONS = ("minmax", "clip", "abs", "signed")
# --border NAME: the mode of convfilter.pad that fills the convolution's padding cells
BORDERS = {"zero": "CONSTANT", "reflect": "REFLECT", "symmetric": "SYMMETRIC", "edge": "EDGE"}
# Pillow's own default pixel limit (about 89.5 million pixels, a 9459x9459 image)
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


@dataclass(frozen=True)
class PoolType:
    """One value of ``--pool``: the :mod:`convfilter.ops` function that pools, and how.

    ``windowed`` pools slide a window (``--pool-size``, ``--pool-stride``,
    ``--pool-padding``) and are called as ``function(x, size, strides,
    padding)``; the others reduce each whole map to one value and are called as
    ``function(x, keepdims=True)``. ``reduce`` names what a window gives (max
    or mean), for ``convfilter shape``.
    """

    name: str
    function: str | None
    reduce: str = ""
    windowed: bool = False


POOL_TYPES = {t.name: t for t in (
    PoolType("none", None),
    PoolType("max", "max_pool2d", "max", windowed=True),
    PoolType("avg", "avg_pool2d", "mean", windowed=True),
    PoolType("global-max", "global_max_pool2d", "max"),
    PoolType("global-avg", "global_avg_pool2d", "mean"),
)}


@dataclass(frozen=True)
class Pooling:
    """A pooling stage; ``stride`` None means the pool size (keras' default). ``padding`` is "SAME",
    "VALID" or explicit ``((top, bottom), (left, right))`` (max pooling only, as in TensorFlow)."""

    type: str = "none"
    size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None
    padding: str | tuple[tuple[int, int], tuple[int, int]] = "VALID"

    def __post_init__(self):
        if self.type in POOL_TYPES and self.kind.windowed:  # TensorFlow's rule for explicit padding
            check_pool_padding(self.type, self.padding, self.size)

    @property
    def kind(self) -> PoolType:
        return POOL_TYPES[self.type]

    @property
    def label(self) -> str:
        """The map label of a pooling without kernels (``pool``): the ``--type`` as spelled,
        ``max-pool``, ``global-avg-pool``."""
        return f"{self.type}-pool"

    @property
    def is_global(self) -> bool:
        """A pool of each whole map (one value per map), not a sliding window."""
        return self.type != "none" and not self.kind.windowed

    @property
    def strides(self) -> tuple[int, int]:
        return self.size if self.stride is None else self.stride

    def geometry(self, height: int, width: int) -> tuple[AxisGeometry, AxisGeometry] | None:
        """Per-axis geometry of this pool over a height x width map (None for none/global)."""
        if not self.kind.windowed:
            return None
        sh, sw = self.strides
        return (
            axis(height, self.size[0], sh, axis_padding(self.padding, 0)),
            axis(width, self.size[1], sw, axis_padding(self.padding, 1)),
        )


@dataclass(frozen=True)
class Convolution:
    """A convolution stage: kernels with stride, padding, dilation, bias and activation.

    ``padding`` is "SAME", "VALID" or explicit ``((top, bottom), (left, right))``; ``border``
    the mode of :func:`convfilter.pad` that fills the padding cells (a value of
    :data:`BORDERS`); ``flip`` rotates every kernel by 180 degrees (true convolution).
    """

    kernels: tuple[Kernel, ...]
    stride: tuple[int, int] = (1, 1)
    padding: str | tuple[tuple[int, int], tuple[int, int]] = "SAME"
    dilation: tuple[int, int] = (1, 1)
    bias: tuple[float, ...] = ()
    activation: str = "none"
    channels: str = "sum"
    border: str = "CONSTANT"
    flip: bool = False

    def __post_init__(self):
        if self.bias:
            bias_per_map(self.bias, self.map_count)

    @property
    def map_count(self) -> int:
        """Feature maps of the kernels (before ``--channels each`` repeats them per channel)."""
        return sum(k.map_count for k in self.kernels)

    def geometry(self, height: int, width: int, kernel_shape: tuple[int, int]):
        """Per-axis geometry of one kernel over a height x width image (ValueError when the window
        does not fit, or the border cannot fill the padding)."""
        rows = axis(height, kernel_shape[0], self.stride[0], axis_padding(self.padding, 0), self.dilation[0])
        cols = axis(width, kernel_shape[1], self.stride[1], axis_padding(self.padding, 1), self.dilation[1])
        check_border(self.border, rows, "rows")
        check_border(self.border, cols, "columns")
        return rows, cols


def bias_per_map(bias: tuple[float, ...], count: int) -> tuple[float, ...]:
    """One bias per feature map: a single value is repeated; otherwise there must be ``count``."""
    if len(bias) == 1:
        return bias * count
    if len(bias) != count:
        if count == 1:
            raise ValueError(f"--bias has {len(bias)} values but there is 1 feature map; give one value")
        raise ValueError(f"--bias has {len(bias)} values but there are {count} feature maps; give 1 value or {count}")
    return bias


@dataclass(frozen=True)
class Recipe:
    """Everything one input goes through: an optional convolution, then pooling."""

    convolution: Convolution | None = None
    pooling: Pooling = field(default_factory=Pooling)


@dataclass(frozen=True)
class View:
    """How png outputs are drawn: a colour map, and optionally one montage per input.

    ``montage`` puts all maps of an input into one labelled grid
    (:mod:`convfilter.montage`); ``with_input`` adds the input as the first
    tile; ``columns`` None lets the montage choose the grid.
    ``png_compression`` is the zlib level PNGs are written with, 0-9.
    """

    colormap: str = "gray"
    montage: bool = False
    with_input: bool = False
    columns: int | None = None
    png_compression: int = 4  # zlib level of PNG files (see convfilter.png)

    def __post_init__(self):
        if self.colormap not in COLORMAPS:
            raise ValueError(f"unknown colour map {self.colormap!r}; choose {', '.join(COLORMAPS)}")
        given = [name for name, value in (("--with-input", self.with_input), ("--columns", self.columns))
                 if value not in (False, None)]
        if not self.montage and given:
            verb = "shapes" if len(given) == 1 else "shape"
            raise ValueError(f"{' and '.join(given)} {verb} a montage; add --montage")
        if self.columns is not None and self.columns < 1:
            raise ValueError(f"--columns must be at least 1, got {self.columns}")
        if not 0 <= self.png_compression <= 9:
            raise ValueError(f"--png-compression must be 0 to 9, got {self.png_compression}")
