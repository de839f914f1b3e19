"""What the test files share: the real command in a subprocess, small real images, a folder tree.

Plain helpers are imported by the test files (``from conftest import run_convfilter``); the
fixtures (``cwd``, ``photo``, ``tree``) reach every test by name.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"
# subprocesses run this checkout's package, however (or whether) it is installed
CHECKOUT_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}



def _docs_script(name: str):
    """A script of docs/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# writes docs/reference.md; its command_paths() walks every command, so tests cover new ones too
cli_reference = _docs_script("cli_reference")

GOOD = ["a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.png"]
BROKEN = ["sub/trunc.jpg", "garbage.png"]


def run_convfilter(*args, cwd, text: bool = True, timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """Run ``python -m convfilter ARGS`` in a real subprocess in ``cwd``, capturing its output.

    ``options`` go to :func:`subprocess.run` (``env``, ``input``, ``stdin``, ``preexec_fn``...).
    """
    return subprocess.run([sys.executable, "-m", "convfilter", *map(str, args)], cwd=cwd, capture_output=True,
                          text=text, timeout=timeout, **options)


def picture(path: Path, seed: int, size=(24, 32)) -> None:
    """A seeded noise RGB image at ``path`` (its format from the extension), folders created."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), to compare whole output trees."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """A fresh working folder for the test (outputs without -o land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def photo(cwd) -> Path:
    """A small smooth RGB photo with texture: 23x31, so every stride and pool has leftovers."""
    rows, cols = np.mgrid[0:23, 0:31]
    rng = np.random.default_rng(5)
    rgb = np.stack([rows * 10, cols * 8, (rows * cols) % 256], axis=2) + rng.integers(0, 20, (23, 31, 3))
    path = cwd / "photo.png"
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    """Good images in nested folders, a truncated JPEG, a garbage PNG, a text file, an empty folder."""
    root = tmp_path / "tree"
    for seed, name in enumerate(GOOD):
        picture(root / name, seed)
    whole = (root / "a.jpg").read_bytes()
    (root / "sub" / "trunc.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (root / "notes.txt").write_text("a text file, not an image\n")
    (root / "empty").mkdir()
    return root
