"""The public API is typed: the package ships py.typed and every export has full annotations."""

from __future__ import annotations

import inspect
from pathlib import Path

import convfilter


def test_the_package_says_it_is_typed():
    assert (Path(convfilter.__file__).parent / "py.typed").is_file()


def test_every_exported_function_is_annotated():
    for name in convfilter.__all__:
        value = getattr(convfilter, name)
        if not callable(value):
            continue
        signature = inspect.signature(value)
        missing = [p.name for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
        assert not missing, f"{name}: parameters without a type: {missing}"
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"
