"""The tables that define the extensible concepts (output formats, pool types, activations) agree
with the code that implements each entry, so that adding one is one entry plus its code."""

from __future__ import annotations

import numpy as np
import pytest

from convfilter import io, ops, pipeline
from convfilter.formats import FORMAT_OF_SUFFIX, FORMATS, format_help
from convfilter.recipe import ACTIVATIONS, POOL_TYPES, Pooling


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_encodes_with_its_magic_and_is_recognised_as_ours(fmt, tmp_path):
    spec = FORMATS[fmt]
    payload = io.encode(np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4, 1), fmt,
                        metadata={io.MARK_KEY: "{}"})
    assert payload.startswith(spec.magic)
    path = tmp_path / f"map.{spec.extension}"
    path.write_bytes(payload)
    assert io.written_by_convfilter(str(path))
    assert spec.help() in format_help()


def test_unmarked_files_of_marked_formats_are_not_ours(tmp_path):
    from PIL import Image

    for suffix in (".png", ".tif"):
        path = tmp_path / f"plain{suffix}"
        Image.new("L", (4, 3)).save(path)
        assert not io.written_by_convfilter(str(path))


def test_every_suffix_chooses_a_format_with_that_extension():
    assert FORMAT_OF_SUFFIX[".tiff"] == "tiff"
    for suffix, fmt in FORMAT_OF_SUFFIX.items():
        assert suffix[1:].startswith(FORMATS[fmt].extension)


@pytest.mark.parametrize("name", [t for t in POOL_TYPES if t != "none"])
def test_every_pool_type_runs_its_ops_function(name):
    kind = POOL_TYPES[name]
    data = np.arange(24, dtype=np.float32).reshape(4, 6, 1)
    pooled = pipeline.pool(data, Pooling(name, (2, 2)))
    function = getattr(ops, kind.function)
    expected = function(data, (2, 2), (2, 2), "VALID") if kind.windowed else function(data, keepdims=True)
    np.testing.assert_array_equal(pooled, expected)
    assert kind.reduce in ("max", "mean")
    assert Pooling(name).is_global == (not kind.windowed)


def test_the_cli_activations_are_the_library_s():
    """The CLI lists the names without importing numpy; ops holds the functions under the same names."""
    assert ACTIVATIONS == tuple(ops.ACTIVATIONS)
