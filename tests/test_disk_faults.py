"""Full disks and unwritable places, made for real with small tmpfs mounts (root only).

Root ignores permission bits, so "cannot write" is a read-only mount here. Tests that cannot
mount skip with the reason; each mount is undone by its fixture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convfilter
from conftest import run_convfilter

PACKAGE_DIR = Path(convfilter.__file__).resolve().parent


def mount_tmpfs(folder: Path, options: str) -> None:
    """Mount a tmpfs on ``folder`` or skip the test saying why."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def remount_read_only(folder: Path) -> None:
    result = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot remount read-only: {result.stderr.strip()}")


@pytest.fixture
def mounts():
    """Mount points to unmount at the end, innermost first."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def tiny_tmpfs(mounts, folder: Path, size: str = "64k") -> Path:
    mount_tmpfs(folder, f"size={size},mode=0755")
    mounts.append(folder)
    return folder


def read_only_folder(mounts, folder: Path, files: dict[str, bytes] | None = None) -> Path:
    mount_tmpfs(folder, "size=4m,mode=0755")
    mounts.append(folder)
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    remount_read_only(folder)
    return folder


def convfilter_cli(*args, cwd, env=None):
    return run_convfilter(*args, cwd=cwd, env=env)


@pytest.fixture
def images(tmp_path):
    """A noise image whose colour output (~120 KB) cannot fit in 64 KB, and a tiny one that can."""
    noise = np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    Image.new("RGB", (8, 6), (30, 60, 90)).save(tmp_path / "tiny.png")
    return tmp_path


def test_full_disk_is_a_clear_error_and_leaves_no_partial_file(images, mounts):
    full = tiny_tmpfs(mounts, images / "full")
    # --jobs 1: one input after the other, so the second is written after the first one failed
    result = convfilter_cli("apply", "--jobs", "1", "-v", "-k", "identity", "--channels", "each", "noise.png",
                            "tiny.png", "-o", "full/", cwd=images)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: noise.png: no space left on device"), result.stderr
    assert "full/noise_identity.png" in lines[0]
    # the temporary file was removed, so the next input still had room
    assert lines[1:] == ["wrote full/tiny_identity.png", "processed 1, failed 1, skipped 0"]
    assert sorted(os.listdir(full)) == ["tiny_identity.png"]
    with Image.open(full / "tiny_identity.png") as image:
        assert image.size == (8, 6)


def test_disk_full_in_the_middle_of_a_parallel_batch(tmp_path, mounts):
    """Outputs of ~40 KB each into 256 KB with --jobs 2: the disk fills part-way; the run ends (no hang)
    with exit 1, each failed input named with 'no space left on device', and only whole files."""
    rng = np.random.default_rng(9)
    (tmp_path / "in").mkdir()
    names = [f"img{index:02d}.png" for index in range(16)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (120, 110, 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    full = tiny_tmpfs(mounts, tmp_path / "full", size="256k")
    result = convfilter_cli("apply", "-k", "identity", "--channels", "each", "--jobs", "2", "-v", "in", "-o", "full/",
                            cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    *lines, summary = result.stderr.splitlines()
    failed = [line.split(": ", 2) for line in lines if line.startswith("Error: ")]
    wrote = [line.removeprefix("wrote ") for line in lines if line.startswith("wrote ")]
    assert len(failed) + len(wrote) == len(lines), result.stderr
    assert wrote and failed, "the disk should fill part-way through"
    for _, source, reason in failed:
        assert reason.startswith("no space left on device (full/"), reason
    failed_inputs = {os.path.basename(source) for _, source, _ in failed}
    written_inputs = {os.path.basename(path).removesuffix("_identity.png") + ".png" for path in wrote}
    assert failed_inputs | written_inputs == set(names) and not failed_inputs & written_inputs
    assert summary == f"processed {len(wrote)}, failed {len(failed)}, skipped 0"
    assert sorted(os.listdir(full)) == sorted(os.path.basename(path) for path in wrote)  # no temporary file
    for path in wrote:
        with Image.open(tmp_path / path) as image:
            image.load()
            assert image.size == (110, 120)


def test_full_disk_does_not_replace_an_older_output(images, mounts):
    full = tiny_tmpfs(mounts, images / "full")
    (full / "noise_identity.png").write_bytes(b"older output")
    result = convfilter_cli("apply", "-k", "identity", "--channels", "each", "noise.png", "-o", "full/",
                            cwd=images)
    assert result.returncode == 1 and "no space left on device" in result.stderr
    assert sorted(os.listdir(full)) == ["noise_identity.png"]
    assert (full / "noise_identity.png").read_bytes() == b"older output"


def test_read_only_output_folder(images, mounts):
    read_only_folder(mounts, images / "ro")
    for output in ("ro/", "ro/sub/", "ro/one.png"):
        result = convfilter_cli("apply", "-k", "vertical", "tiny.png", "-o", output, cwd=images)
        assert result.returncode == 1, (output, result.stderr)
        assert result.stderr.startswith("Error: tiny.png: read-only file system"), (output, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert os.listdir(images / "ro") == []


def kernels_run(cwd, env):
    """One real convolution in a fresh process that imports and loads or compiles Numba's kernels
    (a tiny image would otherwise run on the numpy ones)."""
    return convfilter_cli("apply", "-k", "sobel-x", "tiny.png", "-o", "out.png", cwd=cwd,
                          env=dict(env, CONVFILTER_BACKEND="numba"))


def test_unwritable_numba_cache_dir_still_works(images, mounts):
    read_only_folder(mounts, images / "cache")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(images / "cache"))
    result = kernels_run(images, env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with Image.open(images / "out.png") as image:
        assert image.size == (8, 6)


def read_only_install(mounts, folder: Path) -> Path:
    """A copy of the package on a read-only mount under ``folder`` (for PYTHONPATH)."""
    files = {path.name: path.read_bytes() for path in PACKAGE_DIR.glob("*.py")}
    folder.mkdir()
    read_only_folder(mounts, folder / "convfilter", files)
    return folder


@pytest.mark.slow
def test_read_only_package_and_home(images, mounts):
    """Installed read-only, with a read-only home and temp folder: still computes, never crashes."""
    site = read_only_install(mounts, images / "site")
    package = site / "convfilter"
    home = read_only_folder(mounts, images / "home")
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    probe = subprocess.run([sys.executable, "-c", "import convfilter; print(convfilter.__file__)"],
                           env=env, cwd=images, capture_output=True, text=True)
    assert probe.stdout.strip() == str(package / "__init__.py"), probe.stderr

    # writable temp folder: the kernels are cached there
    result = kernels_run(images, env)
    assert result.returncode == 0, result.stderr
    assert (images / "out.png").exists()

    # nothing writable at all: compiled without a cache, or one clear line, never a traceback
    (images / "out.png").unlink()
    env["TMPDIR"] = str(home)
    result = kernels_run(images, env)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        assert (images / "out.png").exists()
    else:
        assert result.returncode == 1 and result.stderr.startswith("Error: "), result.stderr
        assert result.stderr.count("\n") == 1


@pytest.mark.slow
def test_no_writable_cache_folder_at_all_compiles_without_a_cache(images, mounts):
    """Read-only package, NUMBA_CACHE_DIR and every fallback: the kernels compile uncached."""
    site = read_only_install(mounts, images / "site")
    nowhere = read_only_folder(mounts, images / "nowhere")
    # /tmp itself cannot be made read-only for one process here, so the fallback list is replaced
    driver = (
        "import sys\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import convfilter._numba_cache as cache\n"
        f"cache.candidate_dirs = lambda: [{str(nowhere / 'a')!r}, {str(nowhere)!r}]\n"
        "from convfilter import _jit\n"
        "assert _jit.CACHE is False and _jit.__file__.startswith(sys.path[0]), (_jit.CACHE, _jit.__file__)\n"
        "from convfilter.cli import main\n"
        "main(['apply', '-k', 'sobel-x', 'tiny.png', '-o', 'out.png'])\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(nowhere), PYTHONDONTWRITEBYTECODE="1", CONVFILTER_BACKEND="numba")
    result = subprocess.run([sys.executable, "-c", driver], cwd=images, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "wrote out.png\n"
    with Image.open(images / "out.png") as image:
        assert image.size == (8, 6)
    assert os.listdir(nowhere) == []
