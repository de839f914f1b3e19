"""convfilter's Keras model runner against Keras itself, side by side in one process.

Networks on 224x224x3 inputs, batch 1 and batch 8:

- ``vgg``: a VGG-style stack (3x3 convolutions of 32 and 64 channels with ReLU, max pools,
  then a global average pool and a Dense softmax);
- ``mobilenetv2``: ``keras.applications.MobileNetV2(weights=None)``, Keras' architecture
  with random weights (nothing is downloaded);
- ``resnet50`` (not in the default list: a 100 MB file, minutes at batch 8):
  ``keras.applications.ResNet50(weights=None)``, deep 3x3 and 1x1 layers of up to 2048
  channels.

Each model is built with Keras, saved as ``.keras`` in a temporary folder and loaded with
``convfilter.load_model``; the script first checks that both give the same output (relative
to its magnitude), then times ``model.predict(x)`` (convfilter) against ``model(x)`` (Keras,
eager, ``training=False``) in alternating rounds and prints medians and the ratio Keras /
convfilter (above 1: convfilter faster).

Needs TensorFlow (never a dependency of convfilter): ``pip install tensorflow-cpu``.

    python benchmarks/bench_model.py [--rounds 3] [--calls 5] [--models vgg,mobilenetv2,resnet50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def vgg(keras):
    layers = keras.layers
    x_in = keras.Input((224, 224, 3))
    x = layers.Rescaling(1 / 255.0)(x_in)
    for filters, convs in ((32, 2), (64, 2), (64, 2)):
        for _ in range(convs):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(x_in, layers.Dense(10, activation="softmax")(x), name="vgg")


def mobilenetv2(keras):
    return keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))


def resnet50(keras):
    return keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))


MODELS = {"vgg": vgg, "mobilenetv2": mobilenetv2, "resnet50": resnet50}


def timed(call, calls: int) -> float:
    """Median seconds of ``calls`` calls."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5, help="calls per round (median)")
    parser.add_argument("--models", default="vgg,mobilenetv2")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args(argv)
    try:
        import keras
        import tensorflow as tf  # noqa: F401
    except ImportError:
        print("TensorFlow is not installed; pip install tensorflow-cpu to run this benchmark", file=sys.stderr)
        return 0
    import convfilter

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    print(f"{'model':<12} {'batch':>5} {'convfilter':>11} {'keras':>9} {'keras/convfilter':>17}  rel. diff")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            net = MODELS[name](keras)
            path = Path(folder) / f"{name}.keras"
            net.save(path)
            ours = convfilter.load_model(path)
            for batch in (int(b) for b in args.batches.split(",")):
                x = rng.uniform(0, 255, (batch, 224, 224, 3)).astype(np.float32)
                if name == "mobilenetv2":
                    x = x / 127.5 - 1  # MobileNetV2 expects [-1, 1] (it has no Rescaling layer)
                # compared before the head too: a random network's softmax can be flat
                inner = net.layers[-3].name
                probe = keras.Model(net.inputs, [net.get_layer(inner).output, net.outputs[0]])
                wants = [np.asarray(v) for v in probe([x], training=False)]
                gots = [ours.feature_maps(x, [inner])[inner], ours.predict(x)]
                difference = max(float(np.abs(g - w).max() / np.abs(w).max()) for g, w in zip(gots, wants))
                ours_times, keras_times = [], []
                for _ in range(args.rounds):
                    ours_times.append(timed(lambda: ours.predict(x), args.calls))
                    time.sleep(0.5)  # let TensorFlow's and BLAS's spinning threads settle
                    keras_times.append(timed(lambda: net(x, training=False), args.calls))
                    time.sleep(0.5)
                a, b = statistics.median(ours_times), statistics.median(keras_times)
                print(f"{name:<12} {batch:>5} {a * 1e3:>9.1f}ms {b * 1e3:>7.1f}ms {b / a:>17.2f}  {difference:.1e}",
                      flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
