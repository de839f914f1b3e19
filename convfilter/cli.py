"""The ``convfilter`` command line: parse options, then io -> pipeline -> io.

Only click is imported at the top, so that ``--help``, ``kernels`` and
``shape`` start fast: the options of the commands that take a recipe are made
when such a command runs or shows its help (:class:`DeferredOptions`), and
numpy, Pillow and Numba are imported inside the commands that compute.

Exit codes: 0 success, 1 some input failed (or the cluster running the batch
went away), 2 bad usage (or a --scheduler that cannot be used), 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sys

from typing import TYPE_CHECKING

import click

from . import __version__

if TYPE_CHECKING:
    from .recipe import Pooling, Recipe, View

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 130, 143


# --- option types ----------------------------------------------------------------------------


class PairType(click.ParamType):
    """``N`` or ``H,W`` (also ``HxW``): a pair of whole numbers >= 1."""

    name = "N|H,W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        match = re.fullmatch(r"(\d+)(?:\s*[,x]\s*(\d+))?", text)
        if not match:
            self.fail(f"'{value}' is not N or H,W with whole numbers (e.g. 2 or 2,3)", param, ctx)
        first = int(match.group(1))
        second = int(match.group(2)) if match.group(2) else first
        if first < 1 or second < 1:
            self.fail(f"'{value}' must be at least 1", param, ctx)
        if max(first, second) > 100_000:
            self.fail(f"'{value}' is too large", param, ctx)
        return (first, second)


class PaddingType(click.ParamType):
    """``same``, ``valid``, ``N`` (N cells on every side) or ``T,B,L,R`` (top, bottom, left, right)."""

    name = "same|valid|N|T,B,L,R"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple) or str(value).upper() in ("SAME", "VALID"):
            return value if isinstance(value, tuple) else str(value).upper()
        text = str(value).strip()
        if not re.fullmatch(r"\d+(\s*,\s*\d+){3}|\d+", text):
            self.fail(f"'{value}' is not same, valid, N or T,B,L,R (whole numbers of padding cells: "
                      "top, bottom, left, right; e.g. 1 or 0,1,0,1)", param, ctx)
        cells = [int(v.strip()) for v in text.split(",")] * (4 if "," not in text else 1)
        if max(cells) > 100_000:
            self.fail(f"'{value}' is too large", param, ctx)
        return (cells[0], cells[1]), (cells[2], cells[3])


class KernelType(click.ParamType):
    """A built-in name (``vertical``, ``gaussian:9:2``), a matrix or a kernel file."""

    name = "KERNEL"

    def shell_complete(self, ctx, param, incomplete):
        """The built-in names, then files (a kernel file), for the shell's completion."""
        from click.shell_completion import CompletionItem

        from .kernels import REGISTRY

        names = [CompletionItem(name) for name in REGISTRY if name.startswith(incomplete)]
        return names or [CompletionItem(incomplete, type="file")]

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            from .kernels import looks_out_first, resolve

            kernel = resolve(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        shape = getattr(kernel.weights, "shape", ())
        if len(shape) == 4 and looks_out_first(shape, shape[2]):  # (8, 3, 3, 3) runs on RGB either way
            click.echo(f"Warning: kernel '{value}' {tuple(shape)} is read as (fh, fw, in, out), {shape[3]} maps "
                       f"of {shape[0]}x{shape[1]} kernels; if it is PyTorch's (out, in, kh, kw), save "
                       "np.transpose(weights, (2, 3, 1, 0)) instead", err=True)
        return kernel


class BiasType(click.ParamType):
    """One number, or one per feature map separated by commas."""

    name = "B[,B...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from .kernels import FLOAT32_MAX

        try:
            values = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"'{value}' is not a number or a comma-separated list of numbers", param, ctx)
        if not all(abs(v) <= FLOAT32_MAX for v in values):  # maps are float32
            self.fail(f"'{value}' must be finite and within float32 range (|b| <= 3.4e38)", param, ctx)
        return values


PAIR = PairType()
PADDING = PaddingType()
CHOICE = dict(case_sensitive=False)


class DeferredOptions(click.Command):
    """A command whose options are made when it is parsed, completed or shows its help.

    Their choices, defaults and help come from the recipe and format tables;
    importing those modules at start-up would slow ``convfilter --help`` and
    ``kernels``, which do not need them. ``options`` decorates the callback as
    click's option decorators do; its options follow those given directly.
    """

    def __init__(self, *args, options, **kwargs):
        super().__init__(*args, **kwargs)
        self._decorate = options

    def _make_options(self) -> None:
        if self._decorate is not None:
            decorate, self._decorate = self._decorate, None
            self.callback = decorate(self.callback)
            self.params = [*self.params, *reversed(getattr(self.callback, "__click_params__", []))]

    def get_params(self, ctx):
        self._make_options()
        return super().get_params(ctx)

    def make_context(self, *args, **kwargs):
        self._make_options()
        return super().make_context(*args, **kwargs)

    def to_info_dict(self, ctx):
        self._make_options()
        return super().to_info_dict(ctx)


def make_all_options(group: click.Group | None = None) -> None:
    """Make the options of every command now: the server does, once, before it forks children."""
    for command in (group or cli).commands.values():
        if isinstance(command, DeferredOptions):
            command._make_options()
        elif isinstance(command, click.Group):
            make_all_options(command)


def io_options(command):
    """The input/output options that ``apply`` and ``pool`` share."""
    from .colormap import COLORMAPS
    from .formats import FORMATS, format_help, written_extensions
    from .recipe import DEFAULT_MAX_PIXELS, NORMALIZATIONS

    options = [
        click.argument("inputs", nargs=-1, metavar="INPUT..."),
        click.option("-o", "--output", metavar="PATH",
                     help="A folder: an existing one, a path ending in '/' or a name without an "
                          f"extension (created). A file: a name ending in {written_extensions()} (one "
                          "output). '-': stdout, for a pipe. Default: the current folder."),
        click.option("-f", "--format", "fmt", type=click.Choice(list(FORMATS), **CHOICE), help=format_help()),
        click.option("--normalize", type=click.Choice(NORMALIZATIONS, **CHOICE), default=None,
                     help="How png/png16 show raw values: minmax (as plt.imshow), clip to [0,1], "
                          "abs (|x| / max|x|) or signed (zero in the middle, limits +-max|x|). "
                          "Default: minmax; signed with --colormap diverging."),
        click.option("--colormap", type=click.Choice(COLORMAPS, **CHOICE), default="gray",
                     show_default=True,
                     help="Colours of one-channel png maps: gray (the book's), diverging "
                          "(blue-white-red, zero white: signed edges) or viridis."),
        click.option("--montage", is_flag=True,
                     help="Write all maps of an input into one labelled grid, named after what it "
                          "shows: {stem}_vertical+horizontal_montage.png."),
        click.option("--with-input", is_flag=True, help="Montage: the input is the first tile."),
        click.option("--columns", type=click.IntRange(min=1), default=None,
                     help="Montage: tiles per row. Default: one row up to 4 tiles, else a square-ish grid."),
        click.option("--png-compression", type=click.IntRange(0, 9), default=4, show_default=True,
                     metavar="0-9",
                     help="zlib level of PNG outputs: 0 stores (fastest, largest), 9 is smallest and "
                          "slowest; the pixels are the same."),
        click.option("--max-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_PIXELS,
                     show_default=True, metavar="N",
                     help="Refuse inputs with more pixels than N before decoding them "
                          "(decompression bombs, memory); 0 = no limit."),
        click.option("--accept-truncated", is_flag=True,
                     help="Read a truncated or damaged image as far as its data goes (the rest is "
                          "filler), with a warning, instead of failing it."),
    ]
    command = batch_options(command)
    for option in reversed(options):
        command = option(command)
    return command


def _refuse_unused(pool_type: str, *names: str) -> None:
    """A usage error for window options given on the command line to a pooling that has no window."""
    from .recipe import POOL_TYPES

    ctx = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in names
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given and not POOL_TYPES[pool_type].windowed:
        what = "no pooling" if pool_type == "none" else f"{pool_type} pooling (it has no window)"
        verb = "does" if len(given) == 1 else "do"
        windowed = " or ".join(t for t, kind in POOL_TYPES.items() if kind.windowed)
        raise click.UsageError(f"{', '.join(given)} {verb} nothing with {what}; drop it, or pool with {windowed}")


def layer_options(kernels_required: bool, with_activation: bool):
    """The options that describe the layer (kernels, stride, padding, pooling...), passed as one ``recipe``.

    ``apply`` and ``shape`` share them, so that ``shape`` answers for exactly
    the options ``apply`` takes. Without kernels (``shape`` only) the recipe
    has no convolution.
    """
    from .recipe import ACTIVATIONS, BORDERS, CHANNEL_MODES, POOL_TYPES, Convolution, Recipe

    options = [
        click.option("-k", "--kernel", "kernels", type=KernelType(), multiple=True, required=kernels_required,
                     help="Built-in name (see 'convfilter kernels'), NAME:SIZE[:SIGMA], a matrix "
                          "'1,0,-1;2,0,-2;1,0,-1', or a .txt/.csv/.npy file. Repeat for several maps."),
        click.option("-s", "--stride", type=PAIR, default="1", show_default=True, help="Stride N or SH,SW."),
        click.option("-p", "--padding", type=PADDING, default="same", show_default=True,
                     help="TensorFlow's SAME or VALID, or explicit cells: N on every side, or T,B,L,R "
                          "(top, bottom, left, right), as tf.nn.conv2d's explicit padding."),
        click.option("--border", type=click.Choice(BORDERS, **CHOICE), default="zero", show_default=True,
                     help="Values of the padding cells: zero (TensorFlow's), reflect (mirror without "
                          "repeating the edge, TF's REFLECT), symmetric (mirror with it, TF's SYMMETRIC) "
                          "or edge (repeat the edge pixel, as image editors blur). The amount of padding "
                          "stays what --padding says."),
        click.option("-d", "--dilation", type=PAIR, default="1", show_default=True,
                     help="Dilation N or DH,DW."),
    ]
    if with_activation:
        options += [
            click.option("--bias", type=BiasType(), default=None, help="Added to each map (or one per map)."),
            click.option("-a", "--activation", type=click.Choice(ACTIVATIONS, **CHOICE), default="none",
                         show_default=True, help="Applied after the bias."),
            click.option("--flip", is_flag=True,
                         help="Rotate each kernel by 180 degrees first: true convolution (scipy.ndimage."
                              "convolve, ImageMagick -morphology Convolve) instead of TensorFlow's "
                              "cross-correlation."),
        ]
    options += [
        click.option("--channels", type=click.Choice(CHANNEL_MODES, **CHOICE), default="sum",
                     show_default=True,
                     help="sum: the kernel spans all channels (one gray map, the book's semantics); "
                          "each: filter every channel alone (a colour image); gray: luminance first."),
        click.option("--pool", "pool_type", type=click.Choice(list(POOL_TYPES), **CHOICE), default="none",
                     show_default=True,
                     help="Pooling after the activation. Global pools print input, map (the kernel), "
                          "channel and value per line on stdout, unless -f npy or tiff."),
        click.option("--pool-size", type=PAIR, default="2", show_default=True, help="Pool window N or PH,PW."),
        click.option("--pool-stride", type=PAIR, default=None, help="Pool stride. Default: the pool size."),
        click.option("--pool-padding", type=PADDING, default="valid", show_default=True,
                     help="Pool padding: same, valid, or explicit N or T,B,L,R (max pooling only)."),
    ]

    def decorate(command):
        @functools.wraps(command)
        def wrapper(kernels, stride, padding, border, dilation, channels, pool_type, pool_size, pool_stride,
                    pool_padding, bias=None, activation="none", flip=False, **kwargs):
            convolution = None
            if kernels:
                try:
                    convolution = Convolution(
                        kernels=tuple(kernels), stride=stride, padding=padding, dilation=dilation,
                        bias=bias or (), activation=activation.lower(), channels=channels.lower(),
                        border=BORDERS[border.lower()], flip=flip,
                    )
                except ValueError as exc:  # e.g. --bias values that do not match the maps
                    raise click.UsageError(str(exc)) from None
            _refuse_unused(pool_type.lower(), "pool_size", "pool_stride", "pool_padding")
            pooling = _pooling(pool_type.lower(), pool_size, pool_stride, pool_padding, "--pool-padding")
            return command(recipe=Recipe(convolution, pooling), **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def _pooling(pool_type, size, stride, padding, option: str) -> Pooling:
    from .recipe import Pooling

    try:
        return Pooling(pool_type, size, stride, padding)
    except ValueError as exc:  # explicit padding TensorFlow's pools refuse
        raise click.BadParameter(str(exc), param_hint=option) from None


def _view(colormap, montage, with_input, columns, png_compression) -> View:
    from .recipe import View

    try:
        return View(colormap.lower(), montage, with_input, columns, png_compression)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def batch_options(command):
    """The options for folders and batches, passed to the command as one ``batch`` argument."""
    options = [
        click.option("-r", "--recursive", is_flag=True, help="Also take images in sub-folders of a folder INPUT."),
        click.option("--from-list", metavar="FILE", help="Read more inputs from FILE ('-': stdin), one per line."),
        click.option("--include-outputs", is_flag=True,
                     help="Also take files convfilter wrote (marked PNG/TIFF, .npy) from folders and lists."),
        click.option("--name", "name_template", metavar="TEMPLATE",
                     help="Output file names from {stem} {name} (whole file name) {kernel} {index} "
                          "{ext}. Default: {stem}_{kernel}.{ext}, or {name}_{kernel}.{ext} for inputs "
                          "sharing a stem."),
        click.option("--skip-existing", is_flag=True, help="Skip inputs whose outputs all exist (resume a batch)."),
        click.option("-j", "--jobs", type=click.IntRange(min=1), metavar="N",
                     help="Worker processes. Default: the usable CPU count."),
        click.option("--scheduler", metavar="ADDRESS",
                     help="Run the files on the Dask cluster of this scheduler (tcp://HOST:PORT); "
                          "needs convfilter[dask] and a file system shared with the workers."),
        click.option("--fail-fast", is_flag=True, help="Stop at the first failed input."),
        click.option("--report", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
                     help="Write one JSON line per input (path, outputs, shapes, seconds, error)."),
        click.option("-q", "--quiet", "verbosity", flag_value=-1, help="Print errors only."),
        click.option("-v", "--verbose", "verbosity", flag_value=1, help="Name every file written."),
    ]

    @functools.wraps(command)
    def wrapper(recursive, from_list, include_outputs, name_template, skip_existing, jobs, scheduler,
                fail_fast, report, verbosity, **kwargs):
        from .batch import BatchOptions

        batch = BatchOptions(recursive, from_list, include_outputs, name_template, skip_existing, jobs,
                             fail_fast, report, verbosity or 0, scheduler)
        return command(batch=batch, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


# --- commands --------------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="convfilter")
def cli():
    """Filter images with convolution kernels and pooling, with TensorFlow's semantics.

    \b
    Examples:
      convfilter apply -k vertical sample_images/china.jpg
      convfilter apply -k sobel-x -k sobel-y photo.png -o edges/
      convfilter pool --type max --size 2 photo.png -o pooled.png
      convfilter kernels gaussian:9:2
      convfilter shape --size 427x640 -k vertical:7 -s 2 --pool max

    Run 'convfilter COMMAND -h' for each command's options.
    """


@cli.command(context_settings=CONTEXT, cls=DeferredOptions,
             options=lambda command: layer_options(kernels_required=True, with_activation=True)(io_options(command)))
def apply(inputs, output, fmt, normalize, colormap, montage, with_input, columns, png_compression, max_pixels,
          accept_truncated, recipe, batch):
    """Convolve images with kernels and write one feature map per kernel.

    Each map is named {stem}_{kernel}.{ext} (see --name). INPUT may be a file,
    a folder (its images; -r for sub-folders, mirrored under -o) or '-' for
    stdin (any image format, or .npy from another convfilter).

    \b
    Examples:
      convfilter apply -k vertical sample_images/china.jpg
      convfilter apply -k vertical -k horizontal china.jpg flower.jpg -o maps/
      convfilter apply -k sobel-x --stride 2 --padding valid photo.png -o edges.png
      convfilter apply -k "1,0,-1;2,0,-2;1,0,-1" -a relu --pool max photo.png
      convfilter apply -k gaussian:9:2 --channels each photo.jpg -o blurred.png
      convfilter apply -k gaussian:25:6 --channels each --border edge photo.jpg -o soft.png
      convfilter apply -k sobel-x --padding 1,1,1,1 --border reflect photo.png
      convfilter apply -k "1,2,0;0,-1,3;4,0,-2" --flip photo.png -o convolved.png
      convfilter apply -k vertical img.jpg -f npy -o - | convfilter pool - -o out.png
      convfilter apply -k vertical -k horizontal china.jpg --montage --with-input
      convfilter apply -k sobel-x -k sobel-y photo.png --colormap diverging
      convfilter apply -k sobel-x -r photos/ -o edges/ --skip-existing
      find photos -name '*.jpg' | convfilter apply -k vertical --from-list - -o maps/
    """
    _run(recipe, inputs, output, fmt, normalize,
         _view(colormap, montage, with_input, columns, png_compression), max_pixels, batch, accept_truncated)


def pool_options(command):
    """The window options of ``pool``."""
    from .recipe import POOL_TYPES

    options = [
        click.option("-t", "--type", "pool_type",
                     type=click.Choice([t for t in POOL_TYPES if t != "none"], **CHOICE),
                     default="max", show_default=True, help="Pooling operation."),
        click.option("--size", type=PAIR, default="2", show_default=True, help="Window N or PH,PW."),
        click.option("--stride", type=PAIR, default=None, help="Stride. Default: the window size."),
        click.option("--padding", type=PADDING, default="valid", show_default=True,
                     help="same, valid, or explicit N or T,B,L,R (max pooling only; padding cells never win)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command(context_settings=CONTEXT, cls=DeferredOptions,
             options=lambda command: io_options(pool_options(command)))
def pool(inputs, output, fmt, normalize, colormap, montage, with_input, columns, png_compression, max_pixels,
         accept_truncated, pool_type, size, stride, padding, batch):
    """Pool images (or .npy maps) without convolving.

    Every channel is pooled on its own; outputs are named {stem}_{type}-pool.{ext}
    (max-pool, avg-pool). Global pools print one line per channel on stdout,
    tab-separated: input, map (global-max-pool or global-avg-pool), channel,
    value; -f npy or tiff writes them as files instead.

    \b
    Examples:
      convfilter pool --type max --size 2 photo.png -o pooled.png
      convfilter pool --type avg --size 3 --stride 2 --padding same photo.png
      convfilter pool --type max --size 3 --stride 2 --padding 1 photo.png
      convfilter pool --type global-avg photo.png
      convfilter pool --type max --size 4 photo.png --montage --with-input
    """
    from .recipe import Recipe

    _refuse_unused(pool_type.lower(), "size", "stride", "padding")
    pooling = _pooling(pool_type.lower(), size, stride, padding, "--padding")
    _run(Recipe(None, pooling), inputs, output, fmt, normalize, _view(colormap, montage, with_input, columns, png_compression),
         max_pixels, batch, accept_truncated)


@cli.command(context_settings=CONTEXT)
@click.argument("name", required=False, metavar="[KERNEL]")
def kernels(name):
    """List the built-in kernels, or print one kernel's matrix.

    KERNEL is anything --kernel accepts: a name with optional size and sigma,
    a matrix, or a kernel file.

    \b
    Examples:
      convfilter kernels
      convfilter kernels vertical:5
      convfilter kernels gaussian:9:2
    """
    from .kernels import REGISTRY, format_grid, resolve

    if name is None:
        width = max(len(n) for n in REGISTRY)
        for key, entry in REGISTRY.items():
            click.echo(f"{key.ljust(width)}  {entry.summary}")
        return
    try:
        kernel = resolve(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="KERNEL") from None
    weights = kernel.weights
    if getattr(weights, "ndim", 2) == 4:
        fh, fw, n_in, n_out = weights.shape
        click.echo(f"# filter bank ({fh}, {fw}, {n_in}, {n_out})")
        for o in range(n_out):
            for i in range(n_in):
                click.echo(f"# in {i}, out {o}")
                click.echo(format_grid(tuple(tuple(float(v) for v in row) for row in weights[:, :, i, o])))
        return
    grid = tuple(tuple(float(v) for v in row) for row in weights)
    click.echo(f"# {name}: {len(grid)}x{len(grid[0])}")
    click.echo(format_grid(grid))


@cli.command(context_settings=CONTEXT, cls=DeferredOptions,
             options=lambda command: layer_options(kernels_required=False, with_activation=False)(command))
@click.argument("image", required=False)
@click.option("--size", "size_text", metavar="HxW[xC]", help="Image size instead of an image file.")
def shape(image, size_text, recipe):
    """Print the size of each stage, with the arithmetic, without computing anything.

    \b
    Examples:
      convfilter shape sample_images/china.jpg -k vertical
      convfilter shape --size 427x640x3 -k sobel-x -s 2 -p valid --pool max
      convfilter shape --size 427x640x3 -k vertical:7 -p 3,3,0,0 --border reflect
    """
    from .shape import describe

    height, width, n_channels = _input_size(image, size_text)
    try:
        lines = describe(height, width, n_channels, recipe)
    except ValueError as exc:  # a window larger than the input: about the image, as apply says it
        if image is None:
            raise click.UsageError(str(exc)) from None
        raise click.ClickException(f"{image}: {exc}") from None
    click.echo("\n".join(lines))


@cli.command(context_settings=CONTEXT)
def warmup():
    """Compile every Numba kernel into the on-disk cache now, instead of when first needed.

    Never needed for correct results. Single images and small batches run on
    numpy kernels that give the same bits whenever Numba's start-up would cost
    more than it saves; large images and batches use Numba and compile only the
    kernel they need, once. Run this to take that compiling out of later runs:
    after installing, when building a container image, or in CI. Prints each
    kernel and whether it was compiled or already cached on stderr.

    \b
    Examples:
      convfilter warmup
    """
    import time

    from ._numba_cache import skip_scipy_blas_probe

    start = time.perf_counter()
    skip_scipy_blas_probe()
    _announce_compiling()
    from .ops import warm_up

    for name, state in warm_up().items():
        click.echo(f"{state:8}  {name}", err=True)
    click.echo(f"kernels ready in {time.perf_counter() - start:.2f} s", err=True)


@cli.group(context_settings=CONTEXT)
def server():
    """Start, stop or show the background server that makes each command start fast.

    The server keeps numpy, Pillow and the compiled kernels loaded and runs
    every command in a child process of its own, so a command on one image
    takes tens of milliseconds instead of half a second. It is automatic: the
    first command that finds none runs as usual and starts one for the next,
    which exits after CONVFILTER_SERVER_IDLE seconds without a command
    (default 900). Output, messages and exit codes are the same with it and
    without it. Only your user can use it (a socket in a private folder);
    CONVFILTER_SERVER=off runs every command in its own process.

    \b
    Examples:
      convfilter server status
      convfilter server start
      convfilter server stop
      CONVFILTER_SERVER=off convfilter apply -k vertical china.jpg
    """


@server.command("start", context_settings=CONTEXT)
def server_start():
    """Start the server now (it warms up first) unless it runs; print its pid and socket.

    Commands start one by themselves when they find none; start it ahead to
    have the first command fast too (in a login script, or before a batch).

    \b
    Examples:
      convfilter server start
      CONVFILTER_SERVER_IDLE=3600 convfilter server start
    """
    from . import server as daemon
    from .client import UnsafeFolder

    try:
        info, started = daemon.start()
    except (UnsafeFolder, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    state = "started" if started else "already running"
    click.echo(f"convfilter server {state}: pid {info['pid']}, socket {info['socket']}")


@server.command("stop", context_settings=CONTEXT)
def server_stop():
    """Stop the server and wait until it has exited (exit 1 if it is still there 10 s later).

    Commands it is running are not interrupted; one still warming up just ends.

    \b
    Examples:
      convfilter server stop
    """
    from . import server as daemon

    try:
        pid = daemon.stop()
    except daemon.StillRunning as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("no convfilter server running" if pid is None else f"stopped convfilter server (pid {pid})")


@server.command("status", context_settings=CONTEXT)
def server_status():
    """Show the server's pid, version, socket, uptime and requests served (exit 1 if none is ready).

    'cpu' is the CPU time of the server and of the commands it has finished.

    \b
    Examples:
      convfilter server status
    """
    from . import server as daemon
    from .client import folder_path

    info = daemon.status()
    if info is None:
        warming = daemon.warming_up()
        if warming is None:
            click.echo(f"no convfilter server running (its socket would be in {folder_path()})")
        else:
            click.echo(f"convfilter server warming up (loading or compiling the kernels): pid {warming}")
        raise click.exceptions.Exit(EXIT_FAILED)
    uptime = int(info["uptime"])
    for label, value in (("pid", info["pid"]), ("version", info["version"]), ("socket", info["socket"]),
                         ("uptime", f"{uptime // 3600}:{uptime // 60 % 60:02d}:{uptime % 60:02d}"),
                         ("requests", info["requests"]), ("running", info["running"]),
                         ("cpu", f"{info['cpu']:.2f} s"),
                         ("idle-exit", f"{info['idle']:g} s")):
        click.echo(f"{label:10} {value}")


def _input_size(image, size_text) -> tuple[int, int, int]:
    if (image is None) == (size_text is None):
        raise click.UsageError("give either an IMAGE or --size HxW[xC]")
    if size_text is not None:
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*(?:x\s*(\d+)\s*)?", size_text)
        if not match or min(int(g) for g in match.groups() if g) < 1:
            raise click.BadParameter(f"'{size_text}' is not HxW or HxWxC, e.g. 427x640", param_hint="--size")
        return int(match.group(1)), int(match.group(2)), int(match.group(3) or 3)
    from .probe import image_size

    try:
        return image_size(image)
    except ValueError as exc:
        raise click.ClickException(f"{image}: {exc}") from None


# --- running ---------------------------------------------------------------------------------


COMPILE_NOTICE = ("convfilter: compiling the image kernels for this computer (once: later runs load them "
                  "from the cache)...")


def _announce_compiling() -> None:
    """On a terminal, a compile that keeps the user waiting says so, once (see ``_backend``)."""
    if sys.stderr.isatty():
        from ._backend import set_compile_notice

        set_compile_notice(lambda: click.echo(COMPILE_NOTICE, err=True))


def _run(recipe: Recipe, inputs, output, fmt, normalization, view: View, max_pixels, batch,
         accept_truncated: bool = False) -> None:
    from . import batch as batches

    _announce_compiling()

    try:
        summary = batches.run(recipe, list(inputs), output, fmt and fmt.lower(),
                              normalization and normalization.lower(), batch, view=view,
                              max_pixels=max_pixels, accept_truncated=accept_truncated)
    except batches.UsageProblem as exc:  # options that do not fit the inputs: one line, exit 2
        problem = click.ClickException(str(exc))
        problem.exit_code = click.UsageError.exit_code
        raise problem from None
    except KeyboardInterrupt:
        raise Interrupted() from None  # past click, which would add an empty line to stderr
    except batches.RunProblem as exc:  # e.g. --scheduler without Dask, or a lost cluster: one line
        problem = click.ClickException(str(exc))
        problem.exit_code = exc.exit_code
        raise problem from None
    if summary.failed:
        raise click.exceptions.Exit(EXIT_FAILED)


def _give_back_stderr() -> None:
    """fd 2 as it was before any image was read (see ``LibraryStderr.give_back``), so that the
    command's last words reach the terminal; nothing to do where no image was read."""
    module = sys.modules.get("convfilter._stderr")
    if module is not None:
        module.LibraryStderr.give_back()


class Terminated(BaseException):
    """Raised by the SIGTERM handler so that clean-up (temporary files) runs."""


class Interrupted(BaseException):
    """Ctrl-C during a command's work, carried past click to :func:`main`."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> None:
    """Entry point: run the CLI with our exit codes and no tracebacks for expected failures."""
    from ._signals import install_held

    # both raise, but never inside a block that must run whole (see convfilter._signals)
    if hasattr(signal, "SIGTERM"):
        install_held(signal.SIGTERM, _on_sigterm, raises=Terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started ignoring it
        install_held(signal.SIGINT, signal.default_int_handler, raises=KeyboardInterrupt)
    try:
        try:
            code = cli.main(args=argv, prog_name="convfilter", standalone_mode=False)
        finally:
            _give_back_stderr()
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except Interrupted:
        if sys.stderr.isatty():
            click.echo(err=True)  # end the line the terminal's ^C echo began
        click.echo("Error: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except (click.Abort, KeyboardInterrupt):  # before the work began (click has ended the line)
        click.echo("Error: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except Terminated:
        click.echo("Error: terminated", err=True)
        code = EXIT_TERMINATED
    except BrokenPipeError:
        # the reader went away (e.g. '| head'): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FAILED
    sys.exit(code if isinstance(code, int) else 0)


# the `model` command group registers itself on `cli` (it holds no numpy: --help stays light)
from . import model_cli  # noqa: E402, F401
