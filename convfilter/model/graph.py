"""A Keras model as a graph of layer objects: built from the config, checked against the weights,
run on float32 NHWC batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _backend
from . import layers as _layers
from .files import ModelError, ModelFile, snake_case

NESTED = ("Functional", "Sequential", "Model")


@dataclass
class Node:
    layer: _layers.Layer
    inputs: list[str]  # names of the layers whose outputs feed this one


def _layer_entries(config: dict) -> list[dict]:
    entries = config["config"].get("layers")
    if not isinstance(entries, list) or not entries:
        raise ModelError("the model config lists no layers")
    return entries


def _entry_name(entry: dict) -> str:
    name = entry.get("name") or entry.get("config", {}).get("name")
    if not name:
        raise ModelError(f"a {entry.get('class_name', 'layer')} in the model config has no name")
    return str(name)


def _build_layer(entry: dict) -> _layers.Layer:
    class_name, name = entry.get("class_name", "?"), _entry_name(entry)
    if class_name in NESTED:
        raise ModelError(f"layer '{name}' is a nested model ({class_name}); not supported: "
                         "save the inner model's layers as one model")
    return _layers.build(class_name, name, entry.get("config", {}))


def _sequential(config: dict) -> tuple[list[Node], str, str]:
    nodes, previous = [], None
    for entry in _layer_entries(config):
        layer = _build_layer(entry)
        if previous is None and not isinstance(layer, _layers.InputLayer):
            # Keras 2 writes the input shape into the first layer, or the model's build shape
            shape = entry.get("config", {}).get("batch_input_shape") or config["config"].get("build_input_shape")
            if shape is None:
                raise ModelError("the Sequential model has no input shape in its config (was it never built?)")
            start = _layers.InputLayer("input", {"batch_shape": shape})
            nodes.append(Node(start, []))
            previous = start.name
        nodes.append(Node(layer, [previous] if previous else []))
        previous = layer.name
    return nodes, nodes[0].layer.name, previous


def _history(value, found: list[str]) -> None:
    """Collect the source layer names of the Keras 3 tensors in a node's args, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            found.append(str(value["config"]["keras_history"][0]))
        else:
            for item in value.values():
                _history(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _history(item, found)


def _inbound(entry: dict, name: str) -> list[str]:
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ModelError(f"layer '{name}' is called {len(nodes)} times (a shared layer); not supported")
    if not nodes:
        return []
    node = nodes[0]
    sources: list[str] = []
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        _history(node.get("args", []), sources)
    else:  # Keras 2: [[layer name, node index, tensor index, kwargs], ...]
        sources = [str(item[0]) for item in node]
    return sources


def _endpoints(value, what: str) -> str:
    """The one layer name in ``input_layers``/``output_layers`` ([name, 0, 0] or [[name, 0, 0]])."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        value = [value]
    if not isinstance(value, list) or len(value) != 1:
        raise ModelError(f"the model has {len(value) if isinstance(value, list) else 'no'} {what}; "
                         f"convfilter runs models with one input and one output")
    return str(value[0][0])


def _functional(config: dict) -> tuple[list[Node], str, str]:
    by_name: dict[str, Node] = {}
    for entry in _layer_entries(config):
        layer = _build_layer(entry)
        if layer.name in by_name:
            raise ModelError(f"two layers are named '{layer.name}'")
        by_name[layer.name] = Node(layer, _inbound(entry, layer.name))
    source = _endpoints(config["config"].get("input_layers"), "inputs")
    sink = _endpoints(config["config"].get("output_layers"), "outputs")
    for node in by_name.values():
        for name in node.inputs:
            if name not in by_name:
                raise ModelError(f"layer '{node.layer.name}' takes its input from '{name}', which is not in the model")
    if source not in by_name or not isinstance(by_name[source].layer, _layers.InputLayer):
        raise ModelError(f"the model's input '{source}' is not an InputLayer")
    if sink not in by_name:
        raise ModelError(f"the model's output '{sink}' is not in the model")
    return _topological(by_name, sink), source, sink


def _topological(by_name: dict[str, Node], sink: str) -> list[Node]:
    """The layers the output depends on, each after its inputs, otherwise in config order."""
    order, state = [], {}
    for start in list(by_name) + [sink]:
        stack = [(start, False)]
        while stack:
            name, done = stack.pop()
            if done:
                state[name] = 2
                order.append(by_name[name])
                continue
            if state.get(name) == 2:
                continue
            if state.get(name) == 1:
                raise ModelError(f"the model graph has a cycle through '{name}'")
            state[name] = 1
            stack.append((name, True))
            stack.extend((source, False) for source in reversed(by_name[name].inputs) if state.get(source) != 2)
    needed, todo = set(), [sink]
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(by_name[name].inputs)
    return [node for node in order if node.layer.name in needed]


class Model:
    """A Keras model loaded by :func:`convfilter.load_model`, run with convfilter's ops.

    ``layers`` lists the names of the layers that compute something (InputLayer excluded), in
    the order they run. Arrays are float32 NHWC; a single (H, W, C) image is accepted and the
    results then have no batch axis.
    """

    def __init__(self, nodes: list[Node], source: str, sink: str, name: str = "model"):
        self.name = name
        self._nodes = nodes
        self._by_name = {node.layer.name: node for node in nodes}
        self._source, self._sink = source, sink
        self._plans: dict[frozenset, list[Node]] = {}
        self.input_shape: tuple = self._by_name[source].layer.shape
        self.layers = [node.layer.name for node in nodes if node.layer.name != source]

    def layer(self, name: str) -> _layers.Layer:
        """The layer object called ``name`` (its ``kind``, options and ``weights``)."""
        if name not in self._by_name:
            raise KeyError(f"no layer '{name}' in the model; layers: {', '.join(self.layers)}")
        return self._by_name[name].layer

    @property
    def output_layer(self) -> str:
        return self._sink

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) when the input layer fixes the spatial size, else None (any size)."""
        h, w = self.input_shape[0], self.input_shape[1]
        return (h, w) if h is not None and w is not None else None

    @property
    def channels(self) -> int | None:
        return self.input_shape[-1]

    def output_shapes(self, size: tuple | None = None) -> dict[str, tuple]:
        """Each layer's per-sample output shape for an input of ``size`` ((H, W, C); default the
        model's own input shape, where unknown sizes are None). ModelError if it does not fit."""
        shape = tuple(self.input_shape if size is None else size)
        self._check_input_shape(shape)
        shapes = {self._source: shape}
        for node in self._nodes:
            if node.layer.name != self._source:
                shapes[node.layer.name] = node.layer.output_shape([shapes[s] for s in node.inputs])
        return shapes

    def _check_input_shape(self, shape: tuple) -> None:
        expected = self.input_shape
        if len(shape) != len(expected) or any(e is not None and s is not None and s != e
                                              for s, e in zip(shape, expected)):
            want = "x".join("any" if v is None else str(v) for v in expected)
            got = "x".join(str(v) for v in shape)
            raise ModelError(f"the model takes {want} (HxWxC) inputs, not {got}")

    def _load_weights(self, model_file: ModelFile, entries: list[dict]) -> None:
        """Give each layer its weights, checking their count and shapes against the config."""
        shapes = self.output_shapes()
        position_keys, counts = {}, {}
        for entry in entries:  # .keras groups are named after the class, numbered in config order
            class_name = entry.get("class_name", "")
            key = snake_case(class_name)
            n = counts.get(key, 0)
            counts[key] = n + 1
            position_keys[_entry_name(entry)] = key if n == 0 else f"{key}_{n}"
        for node in self._nodes:
            layer = node.layer
            spec = layer.weight_spec([shapes[s] for s in node.inputs]) if node.inputs else []
            stored = model_file.weights.get(layer.name)
            if stored is None:
                stored = model_file.by_position.get(position_keys.get(layer.name, ""), [] if not spec else None)
            if stored is None:
                raise ModelError(f"layer '{layer.name}' ({layer.kind}): no weights in the file")
            if len(stored) != len(spec):
                raise ModelError(f"layer '{layer.name}' ({layer.kind}): the file holds {len(stored)} weight "
                                 f"arrays, the layer's config needs {len(spec)} ({', '.join(n for n, _ in spec) or 'none'})")
            values = {}
            stored_by_name = {n: a for n, a in stored if n is not None}
            for position, (name, shape) in enumerate(spec):
                array = stored_by_name.get(name, stored[position][1]) if stored_by_name else stored[position][1]
                if tuple(array.shape) != tuple(shape) and None not in shape:
                    raise ModelError(f"layer '{layer.name}' ({layer.kind}): weight '{name}' has shape "
                                     f"{tuple(array.shape)} but the layer needs {tuple(shape)}")
                if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
                    raise ModelError(f"layer '{layer.name}' ({layer.kind}): weight '{name}' is not finite numbers")
                values[name] = array
            layer.set_weights(values)

    # --- running -----------------------------------------------------------------------------

    def _batch(self, x) -> tuple[np.ndarray, bool]:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"input must hold numbers, got dtype {x.dtype}")
        added = x.ndim == len(self.input_shape)
        if added:
            x = x[np.newaxis]
        if x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"input must be (N, H, W, C) or (H, W, C), got shape {x.shape}")
        self.output_shapes(x.shape[1:])  # a clear error before any work
        return np.ascontiguousarray(x, dtype=np.float32), added

    def feature_maps(self, x, layers=None) -> dict[str, np.ndarray]:
        """Run the model on ``x`` and return ``{layer name: its output}`` for ``layers`` (default: all).

        Parameters
        ----------
        x : array_like, (N, H, W, C) or (H, W, C)
            Values as the model was trained on (for an image loaded as Keras' ``img_to_array``
            does, 0-255 floats).
        layers : iterable of str, optional
            Layer names (see :attr:`layers`); the dict keeps this order.
        """
        wanted = list(self.layers) if layers is None else [str(name) for name in layers]
        unknown = [name for name in wanted if name not in self._by_name]
        if unknown:
            raise ValueError(f"no layer {', '.join(repr(n) for n in unknown)} in the model; "
                             f"layers: {', '.join(self.layers)}")
        batch, added = self._batch(x)
        if not wanted:
            return {}
        keep = frozenset(wanted)
        nodes = self._plan(keep)
        last_use = {}
        for position, node in enumerate(nodes):
            for source in node.inputs:
                last_use[source] = position
        stop = max(position for position, node in enumerate(nodes) if node.layer.name in keep)
        values = {self._source: batch}
        # a network calls each kind of kernel about once per layer: Numba's one-off start-up
        # cost is shared by all of them (on numpy's kernels a MobileNetV2 took twice as long)
        with _backend.repeats_at_least(len(nodes)):
            for position, node in enumerate(nodes[: stop + 1]):
                name = node.layer.name
                if name != self._source:
                    values[name] = np.asarray(node.layer([values[s] for s in node.inputs]), dtype=np.float32)
                for source in set(node.inputs):
                    if last_use[source] == position and source not in keep:
                        del values[source]  # free what no later layer reads
        return {name: values[name][0] if added else values[name] for name in wanted}

    def _plan(self, keep: frozenset) -> list[Node]:
        """The nodes to run when only the outputs of ``keep`` are wanted: convolutions fused
        with the batch norm and ReLU after them where nobody reads those in between."""
        if keep not in self._plans:
            from .fusion import fuse

            if len(self._plans) > 16:
                self._plans.clear()
            self._plans[keep] = fuse(self._nodes, keep)
        return self._plans[keep]

    def predict(self, x) -> np.ndarray:
        """The model's output for ``x`` (as Keras' ``model.predict``), float32."""
        return self.feature_maps(x, [self._sink])[self._sink]

    def __repr__(self) -> str:
        return f"<convfilter Model {self.name!r}: {len(self.layers)} layers, input {self.input_shape}>"


def from_file(model_file: ModelFile) -> Model:
    config = model_file.config
    class_name = config.get("class_name")
    if class_name == "Sequential":
        nodes, source, sink = _sequential(config)
    elif class_name in ("Functional", "Model"):
        nodes, source, sink = _functional(config)
    else:
        raise ModelError(f"the file holds a {class_name}, not a Sequential or functional Keras model")
    model = Model(nodes, source, sink, str(config["config"].get("name", "model")))
    model._load_weights(model_file, _layer_entries(config))
    return model
