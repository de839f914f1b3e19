"""One input through a recipe to its output files: where they go, what they are called.

Shared by the CLI commands; imports numpy, Pillow and Numba (through the
pipeline), so the CLI imports it only when there is work to do.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from . import __version__, io, montage, pipeline
from .colormap import default_normalization
from .recipe import Recipe, View

STDOUT = "-"
# image extensions a user may type for -o that convfilter does not write (lossy or 8-bit only)
UNWRITABLE_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".jp2", ".ppm", ".pgm"}


def _is_folder(output: str | None) -> bool:
    """An existing folder, or a path that ends with a separator."""
    return bool(output) and (os.path.isdir(output) or output.endswith(("/", os.sep)))


def maps_per_input(recipe: Recipe) -> int:
    """How many feature maps each input gives (known before reading any input)."""
    conv = recipe.convolution
    if conv is None:
        return 1
    return sum(k.map_count for k in conv.kernels)


def recipe_metadata(recipe: Recipe) -> str:
    """The options of a run as JSON, stored in every PNG convfilter writes."""
    data = {"version": __version__, "pool": recipe.pooling.type}
    conv = recipe.convolution
    if conv is not None:
        data.update(kernels=[k.spec for k in conv.kernels], stride=list(conv.stride), padding=conv.padding,
                    dilation=list(conv.dilation), activation=conv.activation, channels=conv.channels)
    if recipe.pooling.type != "none":
        data.update(pool_size=list(recipe.pooling.size), pool_stride=list(recipe.pooling.strides),
                    pool_padding=recipe.pooling.padding)
    return json.dumps(data, sort_keys=True)


@dataclass
class OutputPlan:
    """Where and how the outputs of a run are written.

    ``target`` is a single file path, ``-`` (stdout), or None for a folder
    (``folder``) with names ``{stem}_{label}.{ext}`` (``{stem}_montage.png``
    with a montage). ``as_text`` means global pool values are printed on
    stdout instead of written as images. ``view`` says how PNGs are drawn.
    """

    fmt: str
    normalization: str
    folder: str = "."
    target: str | None = None
    as_text: bool = False
    metadata: str = ""
    written: dict = field(default_factory=dict)
    view: View = field(default_factory=View)
    inputs: tuple = ()  # every input path of the run: none of them may be overwritten

    @classmethod
    def make(cls, recipe: Recipe, inputs: list[str], output: str | None, fmt: str | None,
             normalization: str | None, view: View = View()) -> "OutputPlan":
        """Decide the plan, raising ValueError (a usage error) when the options contradict.

        ``normalization`` None means the colour map's default (``signed`` for
        diverging, else ``minmax``).
        """
        normalization = normalization or default_normalization(view.colormap)
        extension_fmt = None
        if output and output != STDOUT:
            extension_fmt = io.FORMAT_OF_EXTENSION.get(os.path.splitext(output)[1].lower())
        names_folder = bool(output) and output != STDOUT and (
            _is_folder(output) or extension_fmt is None
        )
        suffix = os.path.splitext(output or "")[1].lower()
        if extension_fmt is None and suffix in UNWRITABLE_IMAGE_SUFFIXES and not _is_folder(output):
            raise ValueError(f"convfilter writes .png, .tif or .npy files, not '{suffix}'; "
                             "change the extension of -o (or end it with '/' for a folder)")
        fmt = fmt or extension_fmt or "png"
        plan = cls(fmt, normalization, metadata=recipe_metadata(recipe), view=view,
                   inputs=tuple(s for s in inputs if s != STDOUT))
        if (view.montage or view.colormap != "gray") and fmt != "png":
            raise ValueError(f"--montage and --colormap draw 8-bit PNGs; they do not apply to -f {fmt}")
        if recipe.pooling.is_global and fmt in ("png", "png16"):
            if view.montage:
                raise ValueError("global pooling gives one number per map, nothing to draw; drop --montage")
            if output:
                raise ValueError(
                    "global pooling gives one number per map, printed on stdout; "
                    "drop -o, or use -f npy to write arrays"
                )
            plan.as_text = True
            return plan
        count = len(inputs) * (1 if fmt == "npy" or view.montage else maps_per_input(recipe))
        if output and not names_folder:
            if count != 1:
                where = "stdout" if output == STDOUT else f"the file '{output}'"
                raise ValueError(
                    f"{count} outputs cannot all go to {where}; give a folder with -o, "
                    "or -f npy to keep all maps of an input in one array"
                )
            plan.target = output
        elif output:
            plan.folder = output
        return plan

    def path_for(self, stem: str, label: str) -> str:
        if self.target is not None:
            return self.target
        name = f"{stem}_{label}.{io.EXTENSIONS[self.fmt]}"
        return name if self.folder == "." else os.path.join(self.folder, name)


def process(source: str, recipe: Recipe, plan: OutputPlan, stdout=None) -> list[str]:
    """Read ``source``, run ``recipe``, write its outputs; return what was written.

    Raises ValueError or OSError with a message for the user when the input
    cannot be read, the recipe does not fit it, or an output cannot be written;
    MemoryError when the image would not fit in memory (checked before decoding).
    """
    loaded = io.load(source, check_size=lambda h, w, c: check_memory(recipe, h, w, c))
    maps = pipeline.run(loaded.array, recipe)
    if plan.as_text:
        stream = stdout if stdout is not None else sys.stdout.buffer
        name = "stdin" if source == STDOUT else source
        lines = [f"{name}\t{m.label}\t{c}\t{float(m.data[0, 0, c]):.9g}\n" for m in maps
                 for c in range(m.data.shape[2])]
        stream.write("".join(lines).encode())
        stream.flush()
        return []
    if plan.fmt == "npy" and len(maps) > 1:
        maps = [_stacked(maps)]
    metadata = {io.MARK_KEY: plan.metadata}
    view = plan.view
    if view.montage:
        picture = montage.draw(maps, plan.normalization, view.colormap, view.columns,
                               loaded.array if view.with_input else None, loaded.stem)
        outputs = [("montage", io.png_bytes(picture, metadata))]
    else:
        outputs = [(m.label, io.encode(m.data, plan.fmt, plan.normalization, metadata, view.colormap))
                   for m in maps]
    written = []
    for label, payload in outputs:
        path = plan.path_for(loaded.stem, label)
        if path == STDOUT:
            stream = stdout if stdout is not None else sys.stdout.buffer
            stream.write(payload)
            stream.flush()
            written.append("stdout")
            continue
        _check_destination(path, source, plan)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        io.write_atomic(path, payload)
        plan.written[os.path.abspath(path)] = source
        written.append(path)
    return written


def check_memory(recipe: Recipe, height: int, width: int, channels: int, available=None) -> None:
    """Refuse, before decoding, an image whose memory bound exceeds the memory available.

    ``available`` defaults to :func:`io.available_memory`; nothing is refused where the
    system does not tell.
    """
    if available is None:
        available = io.available_memory()
    needed = pipeline.memory_bound(recipe, height, width, channels)
    if available is not None and needed > available:
        raise MemoryError(
            f"not enough memory: a {width}x{height} image with {channels} channel(s) needs about "
            f"{needed / 1e9:.1f} GB through these options, {available / 1e9:.1f} GB are available"
        )


def _stacked(maps: list[pipeline.FeatureMap]) -> pipeline.FeatureMap:
    import numpy as np

    shapes = {m.data.shape[:2] for m in maps}
    if len(shapes) != 1:
        raise ValueError(
            "maps of different sizes (kernels of different sizes with padding VALID) cannot share "
            "one .npy array; run them separately"
        )
    return pipeline.FeatureMap("+".join(m.label for m in maps), np.concatenate([m.data for m in maps], axis=2))


def _check_destination(path: str, source: str, plan: OutputPlan) -> None:
    """Refuse to overwrite any input of the run, or an output this run wrote for another input."""
    if os.path.exists(path):
        for other in (source, *plan.inputs):
            if other != STDOUT and os.path.exists(other) and os.path.samefile(path, other):
                which = "the input itself" if other == source else f"the input '{other}' of this run"
                raise ValueError(f"the output '{path}' is {which}; choose another -o")
    earlier = plan.written.get(os.path.abspath(path))
    if earlier is not None and earlier != source:
        raise ValueError(f"the output '{path}' was already written for '{earlier}' in this run; "
                         "use -o with a folder per input")
