"""Decompression bombs and memory: refused before decoding, with a message that says what to do."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import run_convfilter
from convfilter import outputs, pipeline
from convfilter.kernels import resolve
from convfilter.recipe import DEFAULT_MAX_PIXELS, Convolution, Pooling, Recipe

resource = pytest.importorskip("resource")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB over a few rows of real data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress((b"\0" + b"\x80" * 3 * min(width, 4096)) * 4)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def npy_bomb(shape) -> bytes:
    """A .npy header declaring ``shape`` float32, followed by a few bytes only."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + b"\0" * 64


def convfilter(*args, cwd, env=None, preexec_fn=None):
    return run_convfilter(*args, cwd=cwd, env=env, preexec_fn=preexec_fn)


def test_a_bomb_is_refused_before_decoding_with_the_limit_and_the_option(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_bomb(200_000, 200_000))
    started = time.monotonic()
    result = convfilter("apply", "-k", "vertical", "bomb.png", "-o", "out/", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "Error: bomb.png: image has 40,000,000,000 pixels, more than the limit of "
        f"{DEFAULT_MAX_PIXELS:,} (a decompression bomb?); raise it with --max-pixels N, "
        "or --max-pixels 0 for no limit\n"
    )
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def test_shape_reports_a_bombs_declared_size_without_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_bomb(200_000, 100_000))
    result = convfilter("shape", "bomb.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ["input", "100000x200000x3"] in [line.split() for line in result.stdout.splitlines()], result.stdout
    assert result.stderr == ""


@pytest.mark.slow
def test_the_limit_is_exact_and_covers_pillows_warning_band(tmp_path):
    # 40x40 = 1600 pixels: Pillow itself only warns between 1x and 2x its limit
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "small.png")
    for limit, code in ((1600, 0), (1599, 1), (1000, 1), (799, 1), (0, 0)):
        result = convfilter("pool", "--max-pixels", str(limit), "small.png", "-o", f"out{limit}.png",
                            cwd=tmp_path)
        assert result.returncode == code, (limit, result.stderr)
        if code:
            assert f"1,600 pixels, more than the limit of {limit:,}" in result.stderr
            assert not (tmp_path / f"out{limit}.png").exists()
        else:
            with Image.open(tmp_path / f"out{limit}.png") as image:
                assert image.size == (20, 20)


def test_npy_shape_is_checked_before_numpy_allocates(tmp_path):
    (tmp_path / "huge.npy").write_bytes(npy_bomb((100_000, 100_000, 3)))
    result = convfilter("pool", "huge.npy", "-o", "out.png", cwd=tmp_path)
    assert result.returncode == 1
    assert "Error: huge.npy: image has 10,000,000,000 pixels, more than the limit" in result.stderr
    assert "--max-pixels" in result.stderr and "Traceback" not in result.stderr


def test_without_a_pixel_limit_a_bomb_is_refused_by_the_memory_check(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_bomb(200_000, 200_000))
    (tmp_path / "huge.npy").write_bytes(npy_bomb((200_000, 200_000)))
    result = convfilter("apply", "--max-pixels", "0", "-k", "vertical", "bomb.png", "huge.npy", "-o", "out/",
                        cwd=tmp_path)
    assert result.returncode == 1
    *errors, summary = result.stderr.splitlines()
    assert summary == "processed 0, failed 2, skipped 0", result.stderr
    errors.sort()  # two inputs are a batch: the workers report in any order
    assert len(errors) == 2, result.stderr
    assert errors[0].startswith("Error: bomb.png: not enough memory: a 200000x200000 image with 3 channel(s) "
                                "needs about 960.0 GB")
    assert errors[1].startswith("Error: huge.npy: not enough memory: a 200000x200000 image with 1 channel(s) "
                                "needs about 960.0 GB")


@pytest.mark.slow
def test_an_allocation_failure_is_one_clean_line_and_the_next_input_still_runs(tmp_path):
    # an address-space limit makes numpy's allocations fail for real, below the memory check
    # 10000x10000 gray: decoding (about 0.3 GB) fits under the limit; the samples, their float32
    # copy and the map (0.9 GB) do not
    Image.new("L", (10000, 10000), 100).save(tmp_path / "large.png")
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "small.png")
    limit = 950 << 20

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    # --jobs 1: the process whose allocation failed is the one that goes on with the next input
    result = convfilter("apply", "--jobs", "1", "-v", "--max-pixels", "0", "-k", "vertical", "large.png",
                        "small.png", "-o", "out/", cwd=tmp_path, env=env, preexec_fn=limit_memory)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: large.png: not enough memory (Unable to allocate"), result.stderr
    assert lines[1:] == [f"wrote {os.path.join('out', 'small_vertical.png')}", "processed 1, failed 1, skipped 0"]
    assert sorted(os.listdir(tmp_path / "out")) == ["small_vertical.png"]


RECIPE_ONE = Recipe(Convolution(kernels=(resolve("vertical"),)))


@pytest.mark.parametrize("recipe, channels, per_pixel", [
    # 8-bit channels summed as decoded: 4 + 4 per input channel + 8 per map
    (Recipe(Convolution(kernels=(resolve("vertical"),), padding="VALID")), 3, 4 + 12 + 8),
    (Recipe(Convolution(kernels=(resolve("vertical"), resolve("sobel-x")), padding="VALID")), 3, 4 + 12 + 16),
    # made float32 first: 8 more per input channel
    (Recipe(Convolution(kernels=(resolve("box"),), padding="VALID", channels="each")), 3, 4 + 12 + 24 + 24),
    (Recipe(Convolution(kernels=(resolve("box"),), padding="VALID", channels="gray")), 3, 4 + 12 + 8 + 24),
    (Recipe(Convolution(kernels=(resolve("box"),), padding="VALID")), 1, 4 + 4 + 8 + 8),
    (Recipe(None, Pooling("max")), 3, 4 + 12 + 24 + 24),
    # another border than zeros: the whole padded copy, one channel when they are summed
    (Recipe(Convolution(kernels=(resolve("vertical"),), padding=((0, 0), (0, 0)), border="REFLECT")), 3,
     4 + 12 + 8 + 4),
])
def test_memory_bound_counts_input_and_output_channels(recipe, channels, per_pixel):
    # no padded cells beyond the image
    assert pipeline.memory_bound(recipe, 100, 200, channels) == 100 * 200 * per_pixel


def test_check_memory_refuses_only_above_what_is_available():
    needed = pipeline.memory_bound(RECIPE_ONE, 1000, 1000, 3)
    outputs.check_memory(RECIPE_ONE, 1000, 1000, 3, available=needed)
    with pytest.raises(MemoryError, match=r"not enough memory: a 1000x1000 image with 3 channel\(s\) needs "
                                          r"about 0\.0 GB through these options, 0\.0 GB are available"):
        outputs.check_memory(RECIPE_ONE, 1000, 1000, 3, available=needed - 1)


def test_check_memory_gives_each_worker_its_share():
    needed = pipeline.memory_bound(RECIPE_ONE, 10_000, 10_000, 3)  # 2.4 GB
    outputs.check_memory(RECIPE_ONE, 10_000, 10_000, 3, available=3 * needed, workers=3)
    with pytest.raises(MemoryError, match=r"needs about 2\.4 GB through these options, 2\.4 GB are available to "
                                          r"each of 3 workers \(7\.2 GB in all; a smaller --jobs gives each more\)"):
        outputs.check_memory(RECIPE_ONE, 10_000, 10_000, 3, available=3 * needed - 3, workers=3)


def test_parallel_workers_share_the_available_memory(tmp_path, monkeypatch):
    """--jobs N: N workers check at once, so each may use 1/N of what is available (forked workers
    inherit the patched reading of available memory)."""
    from click.testing import CliRunner

    from convfilter import io as cfio
    from convfilter.cli import cli

    names = []
    for index in range(3):
        Image.new("RGB", (100, 80), (index, 50, 90)).save(tmp_path / f"in{index}.png")
        names.append(str(tmp_path / f"in{index}.png"))
    needed = pipeline.memory_bound(RECIPE_ONE, 80, 100, 3)
    monkeypatch.setattr(cfio, "available_memory", lambda: needed * 3 // 2)  # room for one image, not two

    def run(*args):
        result = CliRunner().invoke(cli, ["apply", "-k", "vertical", "-o", str(tmp_path / "out") + "/", *args],
                                    catch_exceptions=False)
        return result.exit_code, result.output.splitlines()

    code, lines = run("--jobs", "2", *names)
    assert code == 1 and lines[-1] == "processed 0, failed 3, skipped 0", lines
    assert sorted(line.split(": ")[1] for line in lines[:-1]) == names
    assert all("are available to each of 2 workers" in line for line in lines[:-1]), lines
    assert not (tmp_path / "out").exists()
    # one worker has it all: the same images pass
    code, lines = run("--jobs", "1", *names)
    written = [f"wrote {tmp_path / 'out' / f'in{index}_vertical.png'}" for index in range(3)]
    assert code == 0 and lines == [*written, "processed 3, failed 0, skipped 0"]  # a handful are named
    # so does a single input with --jobs 2: only one worker runs
    code, lines = run("--jobs", "2", "--skip-existing", "-v", names[0], "-o", str(tmp_path / "one") + "/")
    assert code == 0 and lines == [f"wrote {tmp_path / 'one' / 'in0_vertical.png'}"], lines


def peak_rss(args: list[str], cwd) -> int:
    """Peak resident bytes of one ``convfilter`` process (in-process, no server), by /usr/bin/time."""
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "convfilter", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "CONVFILTER_SERVER": "off", "CONVFILTER_BACKEND": "numba"})
    assert result.returncode == 0, result.stderr
    return 1024 * int(next(line for line in result.stderr.splitlines() if "Maximum resident" in line).split()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("options, recipe", [
    (["-k", "vertical"], Recipe(Convolution(kernels=(resolve("vertical"),)))),
    (["-k", "vertical", "-k", "sobel-x"], Recipe(Convolution(kernels=(resolve("vertical"), resolve("sobel-x"))))),
    (["-k", "vertical", "--channels", "each"], Recipe(Convolution(kernels=(resolve("vertical"),), channels="each"))),
    (["-k", "vertical", "--channels", "gray"], Recipe(Convolution(kernels=(resolve("vertical"),), channels="gray"))),
])
def test_measured_peak_stays_under_the_bound(tmp_path, options, recipe):
    """The bound in docs/failures.md, checked on a 3000x2000 RGB image with /usr/bin/time's peak RSS,
    less that of the same options on a tiny image (what Python, numpy and Numba take)."""
    if not os.path.exists("/usr/bin/time"):
        pytest.skip("needs GNU time at /usr/bin/time (apt-get install time)")
    pixels = np.random.default_rng(1).integers(0, 256, (2000, 3000, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")
    Image.fromarray(pixels[:20, :30]).save(tmp_path / "tiny.png")
    grown = peak_rss(["apply", *options, "noise.png", "-o", "out/"], tmp_path) - \
        peak_rss(["apply", *options, "tiny.png", "-o", "out/"], tmp_path)
    bound = pipeline.memory_bound(recipe, 2000, 3000, 3)
    assert grown < bound, (grown, bound)


def test_memory_bound_includes_the_padding_of_a_large_dilation():
    recipe = Recipe(Convolution(kernels=(resolve("vertical"),), dilation=(1000, 1000)))
    # SAME pads (7 - 1) * 1000 = 6000 cells per axis around a 10x20 image
    padded = (10 + 6000) * (20 + 6000) - 10 * 20
    assert pipeline.memory_bound(recipe, 10, 20, 3) == 10 * 20 * (4 + 12 + 8) + 4 * padded  # one summed channel
    # filtered one by one, the three channels are each padded
    each = Recipe(Convolution(kernels=(resolve("vertical"),), dilation=(1000, 1000), channels="each"))
    assert pipeline.memory_bound(each, 10, 20, 3) == 10 * 20 * (4 + 12 + 24 + 24) + 4 * 3 * padded


def test_a_kernel_file_with_a_huge_declared_shape_is_refused_without_allocating(tmp_path):
    if not os.path.exists("/usr/bin/time"):
        pytest.skip("needs GNU time at /usr/bin/time (apt-get install time)")
    header = npy_bomb((10_000, 10_000))[:-64]
    with open(tmp_path / "huge.npy", "wb") as handle:  # complete but sparse: 400 MB of zeros
        handle.write(header)
        handle.truncate(len(header) + 4 * 10_000 * 10_000)
    (tmp_path / "short.npy").write_bytes(npy_bomb((20_000, 20_000)))  # declares 1.6 GB, holds 64 bytes
    Image.new("RGB", (8, 6)).save(tmp_path / "img.png")
    for name, reason in (("huge.npy", "has more than 67,108,864 values"), ("short.npy", "mmap length")):
        result = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "convfilter", "apply",
                                 "-k", name, "img.png"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 2 and reason in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert int(result.stderr.split()[-1]) < 200_000  # peak KB: nothing near the declared size
