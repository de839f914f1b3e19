"""``convfilter model ...``: the commands that run a trained Keras model.

Like :mod:`convfilter.cli`, only click is imported at the top: ``--help`` never loads numpy,
Numba or h5py. A model that cannot be used is a usage problem (exit 2, one ``Error:`` line,
before any image is read); an input the model cannot take fails alone (exit 1 at the end).
"""

from __future__ import annotations

import sys

import click

from .cli import CONTEXT, DeferredOptions, _run, _view, cli, io_options

DEFAULT_SCALE = 255.0  # model.inputs.DEFAULT_SCALE, repeated here to keep numpy out of --help


class ModelProblem(click.ClickException):
    """A model file that cannot be used: exit 2."""

    exit_code = 2


def open_model(path: str):
    """The loaded model, or ModelProblem naming the file and what is wrong with it."""
    from .model import ModelError, load_model

    try:
        return load_model(path)
    except ModelError as exc:
        raise ModelProblem(f"{path}: {exc}") from None


def input_options(command):
    """How images become model input: value scale and resizing."""
    command = click.option(
        "--resize", is_flag=True,
        help="Resize images (bilinear) to the height and width a fixed-size model takes.")(command)
    return click.option(
        "--scale", type=float, default=DEFAULT_SCALE, show_default=True, metavar="FACTOR",
        help="Multiply image values in [0, 1] by FACTOR: 255 gives the 0-255 floats of Keras' "
             "img_to_array. .npy inputs are taken as they are.")(command)


@cli.group(context_settings=CONTEXT)
def model():
    """Run a trained Keras model (.keras or .h5): its layers' feature maps and its predictions.

    Needs h5py (pip install 'convfilter[keras]'); never TensorFlow. Images are read as
    Keras' img_to_array does (0-255 floats, see --scale) and converted to the channels
    the model takes (gray or RGB); .npy inputs are taken as they are.

    \b
    Examples:
      convfilter model summary digits.keras
      convfilter model apply digits.keras seven.png -o maps/
      convfilter model predict digits.keras seven.png --top 3
    """


@model.command(context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL")
@click.option("--size", "size_text", metavar="HxW[xC]",
              help="Input size to compute the shapes for. Default: the model's own input size.")
def summary(model_path, size_text):
    """Print each layer: its type, output shape, parameters and options, with the size
    arithmetic of every convolution and pool, as 'convfilter shape' prints it.

    \b
    Examples:
      convfilter model summary digits.keras
      convfilter model summary mobilenet.h5 --size 224x224x3
    """
    from .model import ModelError
    from .model.summary import describe

    net = open_model(model_path)
    size = None
    if size_text:
        size = _size(size_text, net.channels)
    try:
        lines = describe(net, size)
    except ModelError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo("\n".join(lines))


def _size(text: str, channels) -> tuple[int, int, int]:
    import re

    match = re.fullmatch(r"\s*(\d+)\s*[x,]\s*(\d+)\s*(?:[x,]\s*(\d+))?\s*", text)
    if not match or min(int(g) for g in match.groups() if g) < 1:
        raise click.BadParameter(f"'{text}' is not HxW or HxWxC, e.g. 224x224x3", param_hint="--size")
    c = int(match.group(3)) if match.group(3) else (channels or 3)
    return int(match.group(1)), int(match.group(2)), c


@model.command(context_settings=CONTEXT, cls=DeferredOptions,
               options=lambda command: input_options(io_options(command)))
@click.argument("model_path", metavar="MODEL")
@click.option("--layers", "layer_names", metavar="NAME,NAME|all",
              help="Layers to write. Default: every convolution and pooling layer.")
def apply(model_path, layer_names, scale, resize, inputs, output, fmt, normalize, colormap, montage, with_input,
          columns, png_compression, max_pixels, accept_truncated, batch):
    """Write the feature maps of a model's layers for each input.

    One file per input and layer, {stem}_{layer}.{ext} (see --name, where {kernel} is the
    layer). png: the layer's channels side by side in one labelled grid; npy: the layer's
    output as it is, (H, W, C) or (C,); tiff: one-channel layers. --montage puts every
    channel of every chosen layer of an input into one grid, {stem}_{model}_montage.png.

    \b
    Examples:
      convfilter model apply digits.keras seven.png -o maps/
      convfilter model apply digits.keras seven.png --layers conv1,pool1 -f npy -o maps/
      convfilter model apply net.keras -r photos/ -o maps/ --jobs 2 --skip-existing
      convfilter model apply net.h5 cat.jpg --resize --layers all --montage --with-input
    """
    import os

    from .model.run import ModelRun, choose_layers

    net = open_model(model_path)
    try:
        layers = choose_layers(net, layer_names)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--layers") from None
    recipe = ModelRun(os.path.abspath(model_path), tuple(layers), scale, resize)
    _run(recipe, inputs, output, fmt, normalize, _view(colormap, montage, with_input, columns, png_compression),
         max_pixels, batch, accept_truncated)


@model.command(context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL")
@click.argument("inputs", nargs=-1, metavar="INPUT...")
@click.option("-r", "--recursive", is_flag=True, help="Also take images in sub-folders of a folder INPUT.")
@click.option("--top", "top", type=click.IntRange(min=1), default=5, show_default=True, metavar="K",
              help="Print the K most probable classes of each input.")
@click.option("--labels", "labels_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Class names, one per line (line 1 names class 0). Default: the class index.")
@input_options
def predict(model_path, inputs, recursive, top, labels_path, scale, resize):
    """Print the classes a model ending in a Dense (softmax) layer gives each input.

    One line per input and rank, tab-separated: input, rank, class index, label,
    probability (the model's output value; a probability when it ends in softmax).

    \b
    Examples:
      convfilter model predict digits.keras seven.png --top 3
      convfilter model predict classifier.h5 -r photos/ --labels classes.txt --resize
    """
    from .batch import BatchOptions, UsageProblem
    from .batch.inputs import expand_inputs
    from .messages import display_name, error_message

    net = open_model(model_path)
    out_shape = net.output_shapes()[net.output_layer]
    if len(out_shape) != 1:
        shape = "x".join("?" if v is None else str(v) for v in out_shape)
        raise ModelProblem(f"{model_path}: the model's output is {shape}, not a vector of class scores; "
                           "use 'convfilter model apply' for feature maps")
    labels = _read_labels(labels_path) if labels_path else None
    try:
        expansion = expand_inputs(list(inputs), BatchOptions(recursive=recursive))
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from None
    failed = len(expansion.failures)
    for failure in expansion.failures:
        click.echo(f"Error: {failure.source}: {failure.error}", err=True)
    for job in expansion.jobs:
        name = display_name(job.source)
        try:
            scores = predict_one(net, job.source, job.data, scale=scale, resize=resize)
        except (ValueError, OSError, MemoryError) as exc:
            click.echo(f"Error: {name}: {error_message(exc)}", err=True)
            failed += 1
            continue
        order = sorted(range(len(scores)), key=lambda k: (-scores[k], k))[:top]
        lines = []
        for rank, index in enumerate(order, 1):
            label = labels[index] if labels and index < len(labels) else str(index)
            lines.append(f"{name}\t{rank}\t{index}\t{label}\t{scores[index]:.6g}\n")
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
    if failed:
        raise click.exceptions.Exit(1)


def predict_one(net, source: str, data: bytes | None, *, scale: float, resize: bool) -> list[float]:
    """The model's output vector for one input file (``-`` with ``data``)."""
    from . import io
    from .model.inputs import prepare

    loaded = io.load(source, data)
    x = prepare(loaded.array, net, scale=scale, raw=loaded.raw, resize=resize)
    return [float(v) for v in net.predict(x)]


def _read_labels(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle.read().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        from .messages import os_error_text

        problem = os_error_text(exc) if isinstance(exc, OSError) else str(exc)
        raise click.BadParameter(f"'{path}': {problem}", param_hint="--labels") from None
