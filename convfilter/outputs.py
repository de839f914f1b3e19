"""Output naming: where one input's output files go and what they are called, and writing them.

:class:`OutputPlan` turns ``-o``, ``-f`` and ``--name`` into every output's
path (``{stem}_{kernel}.{ext}``) before any input is read; :func:`process`
reads one input, runs the recipe and writes those files. Imports numpy,
Pillow and Numba (through the pipeline), so the CLI imports it only when
there is work to do.
"""

from __future__ import annotations

import json
import os
import string
import sys
from dataclasses import dataclass, field

from . import __version__, io, montage, pipeline
from .colormap import default_normalization
from .formats import DEFAULT_FORMAT, FORMAT_OF_SUFFIX, FORMATS, written_extensions
from .geometry import describe_padding
from .messages import STDIO as STDOUT
from .messages import display_name
from .recipe import DEFAULT_MAX_PIXELS, Recipe, View

# image extensions a user may type for -o that convfilter does not write (lossy or 8-bit only)
UNWRITABLE_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".jp2", ".ppm", ".pgm"}


def _is_folder(output: str | None) -> bool:
    """An existing folder, or a path that ends with a separator."""
    return bool(output) and (os.path.isdir(output) or output.endswith(("/", os.sep)))


def output_kind(output: str | None) -> str:
    """What ``-o`` names, by a rule that needs no knowledge of the inputs.

    ``stdout`` for ``-``; a ``folder`` for none (the current folder), an
    existing folder, a path ending in ``/`` or a name without an extension
    (created if needed); a ``file`` for a name ending in .png, .tif, .tiff or
    .npy. Anything else (another extension, an existing file that is not one
    of those) raises ValueError saying what to write instead.
    """
    if output is None or _is_folder(output):
        return "folder"
    if output == STDOUT:
        return "stdout"
    suffix = os.path.splitext(output)[1].lower()
    if suffix in FORMAT_OF_SUFFIX:
        return "file"
    if suffix in UNWRITABLE_IMAGE_SUFFIXES:
        raise ValueError(f"convfilter writes {written_extensions()} files, not '{suffix}'; "
                         "change the extension of -o (or end it with '/' for a folder)")
    if os.path.lexists(output):
        raise ValueError(f"-o '{output}' is an existing file, not a folder; give a folder (e.g. -o maps/) "
                         f"or a file name ending in {written_extensions()}")
    if suffix:
        raise ValueError(f"-o '{output}': convfilter writes {written_extensions()} files; write '{output}/' "
                         "for a folder")
    return "folder"


def model_run(recipe):
    """The recipe when it runs a Keras model (``convfilter model apply``), else None."""
    from .model.run import ModelRun

    return recipe if isinstance(recipe, ModelRun) else None


def output_labels(recipe: Recipe, fmt: str) -> list[str]:
    """The ``{kernel}`` label of every file one input gives, known before reading it.

    One per map; ``-f npy`` stacks all maps of an input in one file labelled
    with every kernel (``vertical+horizontal``).
    """
    if model_run(recipe):
        return recipe.labels()  # one file per layer, whatever the format
    conv = recipe.convolution
    if conv is None:
        return [recipe.pooling.label]
    if FORMATS[fmt].stacked:
        return [joined_label(recipe)]
    return pipeline.kernel_labels(conv.kernels)


def joined_label(recipe: Recipe) -> str:
    """One label for all maps of an input (an .npy array, a montage): the kernels' labels joined
    by ``+`` (a bank counts once), or the pooling's."""
    if model_run(recipe):
        return recipe.label
    conv = recipe.convolution
    if conv is None:
        return recipe.pooling.label
    return "+".join(pipeline.unique_labels([k.label for k in conv.kernels]))


DEFAULT_NAME = "{stem}_{kernel}.{ext}"
NAME_FIELDS = ("stem", "name", "kernel", "index", "ext")


def check_name_template(template: str) -> str:
    """Return ``template`` if it is a valid ``--name``, else raise ValueError saying why.

    Fields are ``{stem}``, ``{name}`` (the input's whole file name, as
    ``hopper.bmp``), ``{kernel}``, ``{index}`` (the input's number in the run,
    from 0) and ``{ext}``; only ``{index}`` takes a format spec
    (``{index:05d}``). The name may hold sub-folders but must stay inside the
    output folder.
    """
    fields = _template_fields(template)
    unknown = [name for name, _, _ in fields if name not in NAME_FIELDS]
    if unknown:
        known = ", ".join("{" + f + "}" for f in NAME_FIELDS)
        raise ValueError(f"--name '{template}': unknown field {{{unknown[0]}}}; use {known}")
    for name, conversion, spec in fields:
        if conversion or (spec and name != "index"):
            raise ValueError(f"--name '{template}': write {{{name}}} plainly; only {{index}} takes a "
                             "format such as {index:05d}")
    try:
        sample = template.format(stem="stem", name="stem.jpg", kernel="kernel", index=0, ext="png")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--name '{template}': {exc}") from None
    if "\0" in sample:  # no file system allows it (a command line cannot carry one; a library call can)
        raise ValueError(f"--name {template!r} contains a NUL character")
    parts = sample.replace("\\", "/").split("/")
    if os.path.isabs(sample) or ".." in parts or not parts[-1] or parts[-1] == ".":
        raise ValueError(f"--name '{template}' must name a file inside the output folder "
                         "(no leading '/', no '..', not ending in '/')")
    return template


def _template_fields(template: str) -> list[tuple[str, str | None, str]]:
    """``(name, conversion, format spec)`` of each ``{field}`` in a ``--name`` template."""
    try:
        return [(name, conversion, spec) for _, name, spec, conversion in string.Formatter().parse(template)
                if name is not None]
    except ValueError as exc:
        raise ValueError(f"--name '{template}': {exc} (write {{{{ and }}}} for literal braces)") from None


def template_fields(template: str) -> set[str]:
    return {name for name, _, _ in _template_fields(template)}


def recipe_metadata(recipe: Recipe) -> str:
    """The options of a run as JSON, stored in every PNG convfilter writes."""
    if model_run(recipe):
        return recipe.metadata(__version__)
    data = {"version": __version__, "pool": recipe.pooling.type}
    conv = recipe.convolution
    if conv is not None:
        data.update(kernels=[k.spec for k in conv.kernels], stride=list(conv.stride),
                    padding=describe_padding(conv.padding), dilation=list(conv.dilation),
                    activation=conv.activation, channels=conv.channels)
        if conv.border != "CONSTANT":
            data.update(border=conv.border.lower())
        if conv.flip:
            data.update(flip=True)
    if recipe.pooling.type != "none":
        data.update(pool_size=list(recipe.pooling.size), pool_stride=list(recipe.pooling.strides),
                    pool_padding=describe_padding(recipe.pooling.padding))
    return json.dumps(data, sort_keys=True)


@dataclass
class OutputPlan:
    """Where and how the outputs of a run are written.

    ``target`` is a single file path, ``-`` (stdout), or None for a folder
    (``folder``) with names from ``name`` (``{stem}_{kernel}.{ext}``), each in
    the input's sub-folder under ``folder``; a montage is one file per input
    with ``{kernel}`` = ``KERNELS_montage``. ``as_text`` means global pool values are
    printed on stdout instead of written as images. ``view`` says how PNGs are
    drawn; ``max_pixels`` is the decompression-bomb limit, applied wherever the
    work runs; ``workers`` is how many inputs may be in memory at once (the
    memory check gives each its share); ``accept_truncated`` reads a truncated or
    damaged image as far as its data goes (with a warning) instead of failing it.
    ``root`` is the folder relative input and output paths are resolved against
    ('' = the working folder); a run sent to other machines sets it to the
    client's working folder, while the paths it reports stay as given.
    """

    fmt: str
    normalization: str
    folder: str = "."
    target: str | None = None
    as_text: bool = False
    metadata: str = ""
    name: str = DEFAULT_NAME
    view: View = field(default_factory=View)
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 1
    root: str = ""
    accept_truncated: bool = False

    @classmethod
    def make(cls, recipe: Recipe, inputs: list[str], output: str | None, fmt: str | None,
             normalization: str | None, name: str | None = None, view: View = View(),
             max_pixels: int = DEFAULT_MAX_PIXELS) -> "OutputPlan":
        """Decide the plan, raising ValueError (a usage error) when the options contradict.

        ``normalization`` None means the colour map's default (``signed`` for
        diverging, else ``minmax``). ``name`` is a ``--name`` template (checked
        by :func:`check_name_template`).
        """
        kind = output_kind(output)
        extension_fmt = None
        if kind == "file":
            extension_fmt = FORMAT_OF_SUFFIX[os.path.splitext(output)[1].lower()]
        if fmt and extension_fmt and FORMATS[fmt].extension != FORMATS[extension_fmt].extension:
            raise ValueError(f"-f {fmt} contradicts the extension of -o '{output}'; drop -f, or give "
                             f"-o a .{FORMATS[fmt].extension} name")
        format_given = f"-f {fmt}" if fmt else f"-o '{output}' ({extension_fmt})"
        fmt = fmt or extension_fmt or DEFAULT_FORMAT
        if normalization and FORMATS[fmt].raw:
            raise ValueError(f"--normalize shapes PNGs for viewing; {fmt} keeps the raw values, drop it")
        normalization = normalization or default_normalization(view.colormap)
        plan = cls(fmt, normalization, metadata=recipe_metadata(recipe), view=view, max_pixels=max_pixels)
        drawing = [name for name, given in (("--montage", view.montage), ("--colormap", view.colormap != "gray"))
                   if given]
        if drawing and not FORMATS[fmt].drawn:
            verb = "draw 8-bit PNGs; they do" if len(drawing) > 1 else "draws 8-bit PNGs; it does"
            raise ValueError(f"{' and '.join(drawing)} {verb} not apply to {format_given}")
        if not model_run(recipe) and recipe.pooling.is_global and not FORMATS[fmt].raw:
            if view.montage:
                raise ValueError("global pooling gives one number per map, nothing to draw; drop --montage")
            if output:
                raise ValueError(
                    "global pooling gives one number per map, printed on stdout; "
                    "drop -o, or use -f npy to write arrays"
                )
            plan.as_text = True
            return plan
        labels = plan.labels(recipe)
        if kind == "folder":
            plan.folder = output or "."
        else:
            _check_single_target(output, kind, len(inputs), len(labels), fmt, stacks=not model_run(recipe))
            plan.target = output
        if name is not None:
            if plan.target is not None:
                raise ValueError(f"--name names files in a folder, but -o '{output}' is one file; "
                                 "give -o a folder")
            plan.name = check_name_template(name)
        fields = template_fields(plan.name)
        if plan.target is None and len(inputs) > 1 and not fields & {"stem", "name", "index"}:
            raise ValueError(f"--name '{plan.name}' gives every input the same name; "
                             "put {stem}, {name} or {index} in it")
        if plan.target is None and len(labels) > 1 and "kernel" not in fields:
            raise ValueError(f"--name '{plan.name}' gives every map of an input the same name; "
                             "put {kernel} in it, or use -f npy")
        return plan

    def path_for(self, stem: str, label: str, subfolder: str = "", index: int = 0,
                 name: str | None = None) -> str:
        """The output path of map ``label`` of input number ``index``, named ``stem`` (file ``name``).

        ``subfolder`` is the input's folder relative to the folder argument it
        was found in; it is mirrored under the output folder.
        """
        if self.target is not None:
            return self.target
        name = self.name.format(stem=stem, name=stem if name is None else name, kernel=label, index=index,
                                ext=FORMATS[self.fmt].extension)
        path = os.path.join(subfolder, name) if subfolder else name
        return os.path.normpath(path if self.folder == "." else os.path.join(self.folder, path))

    def check_inside(self, path: str) -> None:
        """Raise ValueError unless ``path`` (from :meth:`path_for`) lies inside the output folder.

        Names cannot hold ``..`` or start with ``/``, but an existing sub-folder
        of the output folder may be a symbolic link to somewhere else; writing
        through it would put files outside the folder the user gave. The output
        folder itself may be a link. A single ``-o FILE`` is taken as given.
        """
        if self.target is not None:
            return
        root = os.path.realpath(self.located(self.folder))
        real = os.path.realpath(os.path.dirname(os.path.abspath(self.located(path))))
        if os.path.commonpath([root, real]) != root:
            raise ValueError(f"the output '{path}' would be written outside the output folder "
                             f"'{self.folder}' (a symbolic link leads to '{real}'); remove the link "
                             "or choose another -o or --name")

    def outputs_for(self, recipe: Recipe, source: str, subfolder: str = "", index: int = 0,
                    stem: str | None = None) -> list[str]:
        """Every file ``process`` will write for ``source`` (none for text or stdout); ``stem``
        replaces the input's own (see :func:`convfilter.batch.planning.plan_jobs`)."""
        if self.as_text or self.target == STDOUT:
            return []
        stem, name = stem or io.stem_of(source), io.name_of(source)
        return [self.path_for(stem, label, subfolder, index, name) for label in self.labels(recipe)]

    def labels(self, recipe: Recipe) -> list[str]:
        """The ``{kernel}`` label of every file one input gives; a montage is labelled with what it
        shows (``vertical+horizontal_montage``, ``max-pool_montage``)."""
        return [f"{joined_label(recipe)}_montage"] if self.view.montage else output_labels(recipe, self.fmt)

    def located(self, path: str) -> str:
        """Where ``path`` (an input or an output, as given) is on this machine's file system."""
        return os.path.join(self.root, path) if self.root and path != STDOUT else path


def _check_single_target(output: str, kind: str, inputs: int, maps: int, fmt: str, stacks: bool = True) -> None:
    """Raise ValueError unless one input with one output file goes to stdout or the file ``output``.

    ``stacks``: ``-f npy`` would hold all maps of an input in one array (not a model's layers)."""
    if inputs > 1:
        if kind == "stdout":
            raise ValueError(f"-o - writes one input's data to stdout, and {inputs} inputs were given; "
                             "give -o a folder (e.g. -o maps/), or run one command per input")
        raise ValueError(f"{inputs} inputs cannot all go to the file '{output}'; give -o a folder "
                         "(e.g. -o maps/)")
    if maps > 1:
        where = f"stdout as {fmt}" if kind == "stdout" else f"the file '{output}'"
        ways = ["give -o a folder (e.g. -o maps/)"]
        if stacks:
            ways.append("-f npy (all maps in one array)" if kind == "stdout" else "a .npy name (all maps in one array)")
        if FORMATS[fmt].drawn:
            ways.append("--montage (one picture)")
        choices = ways[0] if len(ways) == 1 else f"{', '.join(ways[:-1])} or {ways[-1]}"
        raise ValueError(f"{maps} maps cannot all go to {where}; {choices}")


@dataclass(frozen=True)
class Written:
    """One output of :func:`process`: its path (or ``stdout``) and array shape (H, W, K)."""

    path: str
    shape: tuple[int, ...]


def process(source: str, recipe: Recipe, plan: OutputPlan, stdout=None, *, subfolder: str = "",
            index: int = 0, data: bytes | None = None, warnings: list[str] | None = None,
            stem: str | None = None) -> list[Written]:
    """Read ``source``, run ``recipe``, write its outputs; return what was written.

    ``data`` holds the bytes of ``-`` (stdin) when the caller read them;
    ``subfolder``, ``index`` and ``stem`` (instead of the input's own) name the
    outputs (see ``OutputPlan.path_for``); what the user should know about an
    input processed anyway (read truncated) is appended to ``warnings``.
    Raises ValueError or OSError with a message for the user when the input
    cannot be read, the recipe does not fit it, or an output cannot be written;
    MemoryError when the image would not fit in memory (checked before decoding).
    """
    io.set_max_pixels(plan.max_pixels)
    loaded = io.load(plan.located(source), data,
                     check_size=lambda h, w, c: check_memory(recipe, h, w, c, workers=plan.workers),
                     accept_truncated=plan.accept_truncated)
    if warnings is not None:
        warnings.extend(loaded.warnings)
    model = model_run(recipe)
    maps = model.run(loaded) if model else pipeline.run(loaded.pixels, recipe, loaded.scale)
    if plan.as_text:
        stream = stdout if stdout is not None else sys.stdout.buffer
        name = display_name(source)
        lines = [f"{name}\t{m.label}\t{c}\t{float(m.data[0, 0, c]):.9g}\n" for m in maps
                 for c in range(m.data.shape[2])]
        stream.write("".join(lines).encode())
        stream.flush()
        return []
    if FORMATS[plan.fmt].stacked and len(maps) > 1 and not model:
        maps = [_stacked(maps, joined_label(recipe))]
    metadata = {io.MARK_KEY: plan.metadata}
    view = plan.view
    threads = pipeline.ops.get_num_threads()  # batch workers set 1
    if model and (view.montage or plan.fmt == "png"):
        outputs = model.drawn(maps, plan, loaded, metadata, threads)
    elif model:
        # .npy keeps a layer's output as it is; a vector (C,) is a 1xC image in the other formats
        outputs = [(m.label, m.data.shape, io.encode(m.data if m.data.ndim == 3 or plan.fmt == "npy"
                                                     else m.data.reshape(1, -1, 1), plan.fmt, plan.normalization,
                                                     metadata, png_level=view.png_compression, threads=threads))
                   for m in maps]
    elif view.montage:
        picture = montage.draw(maps, plan.normalization, view.colormap, view.columns,
                               loaded.array if view.with_input else None, loaded.stem)
        shape = (picture.height, picture.width, len(picture.getbands()))
        label = plan.labels(recipe)[0]
        outputs = [(label, shape, io.png_bytes(picture, metadata, view.png_compression, threads))]
    else:
        # each map is encoded once and then dropped, so PNG scaling may reuse its memory, and the
        # decoded image and each map are let go before the next is encoded (a large photo's maps
        # are hundreds of MB each, their files a few)
        loaded.pixels = None
        outputs = []
        while maps:
            m = maps.pop(0)
            outputs.append((m.label, m.data.shape, io.encode(m.data, plan.fmt, plan.normalization, metadata,
                                                             view.colormap, view.png_compression, threads,
                                                             overwrite=True)))
    written = []
    for label, shape, payload in outputs:
        path = plan.path_for(stem or loaded.stem, label, subfolder, index, io.name_of(source))
        if path == STDOUT:
            stream = stdout if stdout is not None else sys.stdout.buffer
            stream.write(payload)
            stream.flush()
            written.append(Written("stdout", shape))
            continue
        where = plan.located(path)
        _check_destination(where, plan.located(source))
        plan.check_inside(path)
        os.makedirs(os.path.dirname(os.path.abspath(where)), exist_ok=True)
        io.write_atomic(where, payload)
        written.append(Written(path, shape))
    return written


def check_memory(recipe: Recipe, height: int, width: int, channels: int, available=None,
                 workers: int = 1) -> None:
    """Refuse, before decoding, an image whose memory bound exceeds its share of the memory available.

    ``available`` defaults to :func:`io.available_memory`; nothing is refused where the
    system does not tell. ``workers`` processes of one run check at the same time,
    each unaware of the images the others are about to load, so each may use
    ``available / workers`` only: that many images at their bound fit in what was
    free (conservatively, as memory the others already hold is not available).
    """
    if available is None:
        available = io.available_memory()
    if available is None:
        return
    share = available // max(workers, 1)
    model = model_run(recipe)
    needed = model.memory_bound(height, width, channels) if model else pipeline.memory_bound(recipe, height, width,
                                                                                             channels)
    if needed > share:
        where = f"{available / 1e9:.1f} GB are available"
        if workers > 1:
            where = (f"{share / 1e9:.1f} GB are available to each of {workers} workers "
                     f"({available / 1e9:.1f} GB in all; a smaller --jobs gives each more)")
        raise MemoryError(
            f"not enough memory: a {width}x{height} image with {channels} channel(s) needs about "
            f"{needed / 1e9:.1f} GB through these options, {where}"
            + ("" if model else _frame_note(recipe, height, width, channels, needed))
        )


def _frame_note(recipe: Recipe, height: int, width: int, channels: int, needed: int) -> str:
    """Where most of ``needed`` is the padded frame around the image, say what makes it large."""
    frame, kernel = pipeline.padding_frame(recipe, height, width, channels)
    if kernel is None or frame * 2 < needed:
        return ""
    conv = recipe.convolution
    (kh, kw), (dh, dw) = kernel.size, conv.dilation
    note = f"; {frame / 1e9:.1f} GB of it is the padding around the image"
    if (dh, dw) != (1, 1):
        dilation = str(dh) if dh == dw else f"{dh},{dw}"
        return (f"{note} for the {kh}x{kw} kernel '{kernel.spec}' spread to {(kh - 1) * dh + 1}x"
                f"{(kw - 1) * dw + 1} pixels by --dilation {dilation}; a smaller --dilation needs less")
    if not isinstance(conv.padding, str):  # explicit cells: -p N or T,B,L,R
        return f"{note} that --padding asks for"
    return f"{note} for the {kh}x{kw} kernel '{kernel.spec}'"


def _stacked(maps: list[pipeline.FeatureMap], label: str) -> pipeline.FeatureMap:
    import numpy as np

    shapes = {m.data.shape[:2] for m in maps}
    if len(shapes) != 1:
        raise ValueError(
            "maps of different sizes (kernels of different sizes with padding VALID) cannot share "
            "one .npy array; run them separately"
        )
    return pipeline.FeatureMap(label, np.concatenate([m.data for m in maps], axis=2))


def _check_destination(path: str, source: str) -> None:
    """Refuse to overwrite the input itself (the batch planner checks the other inputs)."""
    if source != STDOUT and os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
        raise ValueError(f"the output '{path}' is the input itself; choose another -o")
