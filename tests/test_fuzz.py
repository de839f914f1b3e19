"""Hostile input: seeded mutants of real JPEG/PNG/GIF/TIFF files through the CLI and ``outputs.process``.

The hostile corpus (``tests/hostile.py``: DDS variants Pillow does not implement, TIFFs that make
libtiff print, a PNG Pillow recognises then refuses, truncated files...) joins the seeds: each of
its files goes in as it is and as a few mutants, so every failure mode found stays a fixture.

Every mutant must either give its outputs or one ``Error: FILE: reason`` line: the process exits
0 or 1 within a bounded time, never with a traceback, a signal or a hang. The CLI runs many
mutants per process (it carries on after a failed input) to keep the test fast; the in-process
pass through ``outputs.process`` then names the mutant that misbehaves.
"""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from PIL import Image

import hostile
from conftest import run_convfilter
from convfilter import outputs, probe
from convfilter.kernels import resolve
from convfilter.recipe import DEFAULT_MAX_PIXELS, Convolution, Pooling, Recipe

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"
SEED = 20261128
MUTANTS_PER_SEED_FILE = 60  # 6 seed files x 60 = 360 mutants
MUTANTS_PER_HOSTILE_FILE = 8  # and each failing file of the hostile corpus, as it is and 8 mutants
BATCH = 90  # mutants per CLI process
TIMEOUT = 60  # seconds for one CLI process (a hang fails the test instead of stalling it)
ERRORS = (ValueError, OSError, MemoryError)  # what outputs.process may raise for bad input


def seed_files() -> dict[str, bytes]:
    """Small real images in four formats and several modes, cut from the book's photo."""
    photo = Image.open(SAMPLES / "china.jpg").convert("RGB").crop((200, 100, 264, 148))
    files = {}

    def save(name, image, fmt, **options):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **options)
        files[name] = buffer.getvalue()

    save("jpeg-baseline.jpg", photo, "JPEG", quality=85)
    save("jpeg-progressive.jpg", photo, "JPEG", quality=70, progressive=True)
    save("png-rgb.png", photo, "PNG")
    save("png-gray16.png", photo.convert("I").point(lambda v: v * 200).convert("I;16"), "PNG")
    save("gif-palette.gif", photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "GIF")
    save("tiff-deflate.tif", photo, "TIFF", compression="tiff_deflate")
    return files


# --- mutations --------------------------------------------------------------------------------


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 12)):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def insert_chunk(data: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(data))
    chunk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if rng.random() < 0.5:  # a run of one byte, like a fill or a bogus length field
        chunk = bytes([rng.choice((0x00, 0xFF, 0x7F))]) * rng.randint(4, 4096)
    return data[:position] + chunk + data[position:]


def duplicate_slice(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 512))
    return data[:end] + data[start:end] * rng.randint(1, 8) + data[end:]


HUGE_SIDES = (0, 1, 65_535, 65_500, 0x7FFF_FFFF, 0xFFFF_FFFF, 40_000, 9_000)


def huge_size(data: bytes, rng: random.Random) -> bytes:
    """Declare another (often huge) width and height in the header, leaving the data as it is."""
    out = bytearray(data)
    width, height = rng.choice(HUGE_SIDES), rng.choice(HUGE_SIDES)
    if data.startswith(b"\x89PNG"):
        # IHDR is the first chunk; fix its CRC half the time so that decoders get past it
        struct.pack_into(">II", out, 16, width, height)
        if rng.random() < 0.5:
            struct.pack_into(">I", out, 29, zlib.crc32(bytes(out[12:29])))
    elif data.startswith(b"\xff\xd8"):
        for marker in (b"\xff\xc0", b"\xff\xc2"):  # baseline or progressive frame header
            at = data.find(marker)
            if at >= 0:
                struct.pack_into(">HH", out, at + 5, height & 0xFFFF, width & 0xFFFF)
    elif data.startswith(b"GIF"):
        struct.pack_into("<HH", out, 6, width & 0xFFFF, height & 0xFFFF)  # logical screen
        at = data.find(b"\x2c", 13)  # the first image descriptor, if we find it
        if at >= 0 and rng.random() < 0.5:
            struct.pack_into("<HH", out, at + 5, width & 0xFFFF, height & 0xFFFF)
    elif data[:2] in (b"II", b"MM"):
        _tiff_set_size(out, width, height)
    return bytes(out)


def _tiff_set_size(out: bytearray, width: int, height: int) -> None:
    order = "<" if out[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", out, 4)
    (count,) = struct.unpack_from(order + "H", out, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        tag, kind = struct.unpack_from(order + "HH", out, entry)
        if tag in (256, 257):  # ImageWidth, ImageLength: rewrite as LONG
            struct.pack_into(order + "HHII", out, entry, tag, 4, 1, width if tag == 256 else height)


MUTATIONS = (flip_bits, truncate, insert_chunk, duplicate_slice, huge_size)


def make_mutants(folder: Path) -> list[Path]:
    rng = random.Random(SEED)
    paths = []
    for name, data in seed_files().items():
        stem, ext = os.path.splitext(name)
        for index in range(MUTANTS_PER_SEED_FILE):
            mutate = MUTATIONS[index % len(MUTATIONS)]
            mutant = mutate(data, rng)
            if rng.random() < 0.25:  # some mutants get a second, different mutation
                mutant = rng.choice(MUTATIONS)(mutant, rng) if mutant else mutant
            path = folder / f"{stem}-{index:03d}-{mutate.__name__}{ext}"
            path.write_bytes(mutant)
            paths.append(path)
    for name, data in hostile_seeds().items():
        stem, ext = os.path.splitext(name)
        (folder / f"{stem}-original{ext}").write_bytes(data)
        paths.append(folder / f"{stem}-original{ext}")
        for index in range(MUTANTS_PER_HOSTILE_FILE):
            mutate = MUTATIONS[index % len(MUTATIONS)]
            path = folder / f"{stem}-{index:03d}-{mutate.__name__}{ext}"
            path.write_bytes(mutate(data, rng))
            paths.append(path)
    return paths


def hostile_seeds() -> dict[str, bytes]:
    """The failing files of the hostile corpus, their extension also in the stem (no two share one)."""
    return {name.replace(".", "-") + os.path.splitext(name)[1]: data for name, data in hostile.corpus().items()
            if hostile.EXPECTED[name]}


@pytest.fixture(scope="module")
def mutants(tmp_path_factory) -> list[Path]:
    return make_mutants(tmp_path_factory.mktemp("mutants"))


def test_mutants_are_deterministic_and_varied(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_mutants(tmp_path / "a"), make_mutants(tmp_path / "b")
    assert len(first) == 6 * MUTANTS_PER_SEED_FILE + len(hostile_seeds()) * (1 + MUTANTS_PER_HOSTILE_FILE)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    originals = set(seed_files().values())
    changed = [p for p in first if p.read_bytes() not in originals]
    assert len(changed) > 0.95 * len(first)


# --- through the command line -----------------------------------------------------------------


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return run_convfilter(*args, cwd=cwd, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["apply", "-k", "sobel-x", "-k", "gaussian:5:1", "--pool", "max"],
    ["pool", "--type", "avg", "--size", "3", "--padding", "same"],
], ids=["apply", "pool"])
def test_cli_survives_every_mutant(mutants, tmp_path, command):
    outputs = tmp_path / "out"
    failed = succeeded = 0
    for start in range(0, len(mutants), BATCH):
        batch = mutants[start:start + BATCH]
        result = run_cli([*command, "-v", "-o", str(outputs), "--",
                          *map(str, batch)], tmp_path)
        assert result.returncode in (0, 1), f"exit {result.returncode}:\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, result.stderr
        *lines, summary = result.stderr.splitlines()
        error_lines = [line for line in lines if line.startswith("Error: ")]
        errors = {line.split(": ", 2)[1] for line in error_lines}
        assert all(line.startswith(("Error: ", "wrote ")) for line in lines), result.stderr
        assert len(error_lines) == len(errors), "a file reported twice"
        assert errors <= set(map(str, batch)), errors - set(map(str, batch))
        assert summary == f"processed {len(batch) - len(errors)}, failed {len(errors)}, skipped 0", summary
        for path in batch:
            wrote = any(line.startswith("wrote ") and f"{path.stem}_" in line for line in lines)
            assert (str(path) in errors) != wrote, f"{path.name}: neither one error nor outputs"
        assert (result.returncode == 1) == bool(errors)
        failed += len(errors)
        succeeded += len(batch) - len(errors)
    # both paths were exercised: many mutants are refused, some still decode
    assert failed > len(mutants) // 4 and succeeded > 10, (failed, succeeded)
    for written in outputs.iterdir():
        assert not written.name.startswith("."), f"temporary file left: {written.name}"
        with Image.open(written) as image:
            image.load()


def test_a_folder_of_mutants_as_a_parallel_batch(mutants, tmp_path):
    """The whole mutant folder in one --jobs 2 run: one error line per failed file, counts that add up."""
    folder = mutants[0].parent
    outputs = tmp_path / "out"
    result = run_cli(["apply", "-k", "sobel-x", "--pool", "max", "--jobs", "2", "-v", str(folder), "-o", str(outputs)],
                     tmp_path)
    assert result.returncode in (0, 1), f"exit {result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    *lines, summary = result.stderr.splitlines()
    assert all(line.startswith(("Error: ", "wrote ")) for line in lines), result.stderr
    failed = [line.split(": ", 2)[1] for line in lines if line.startswith("Error: ")]
    wrote = [line.removeprefix("wrote ") for line in lines if line.startswith("wrote ")]
    assert len(set(failed)) == len(failed) and set(failed) <= set(map(str, mutants)), "one line per failed file"
    assert summary == f"processed {len(wrote)}, failed {len(failed)}, skipped 0"
    assert len(wrote) + len(failed) == len(mutants)  # every mutant has an image extension: all are inputs
    assert (result.returncode == 1) == bool(failed)
    stems = {Path(name).stem for name in failed}
    assert sorted(Path(path).name for path in wrote) == sorted(f"{p.stem}_sobel-x.png" for p in mutants
                                                                if p.stem not in stems)
    assert sorted(os.listdir(outputs)) == sorted(Path(path).name for path in wrote)  # no temporary file left
    for path in wrote:
        with Image.open(path) as image:
            image.load()


# --- in process: which mutant misbehaves --------------------------------------------------------


class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang()


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM to bound each mutant")
def test_runner_raises_only_clean_errors_for_each_mutant(mutants, tmp_path):
    from convfilter import io as cfio

    recipe = Recipe(Convolution(kernels=(resolve("sobel-x"),)), Pooling("max"))
    cfio.set_max_pixels(DEFAULT_MAX_PIXELS)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    misbehaving = []
    try:
        for path in mutants:
            plan = outputs.OutputPlan.make(recipe, [str(path)], str(tmp_path / "out") + "/", None, "minmax")
            signal.alarm(10)
            try:
                try:
                    outputs.process(str(path), recipe, plan)
                except ERRORS as exc:
                    if not " ".join(str(exc).split()):
                        misbehaving.append(f"{path.name}: {type(exc).__name__} without a message")
                # the same bytes on stdin ('-') must meet the same fate as the file
                fates = []
                for source, data in ((str(path), None), ("-", path.read_bytes())):
                    try:
                        fates.append(cfio.load(source, data=data).array.shape)
                    except ERRORS as exc:
                        fates.append(" ".join(str(exc).split()))
                if fates[0] != fates[1]:
                    misbehaving.append(f"{path.name}: the file gives {fates[0]!r}, stdin {fates[1]!r}")
                # 'convfilter shape' reads only the header; when the image decodes, it must agree
                try:
                    header = probe.image_size(str(path))
                except ValueError:
                    header = None
                if isinstance(fates[0], tuple) and header != fates[0]:
                    misbehaving.append(f"{path.name}: shape reads {header}, the decoded image is {fates[0]}")
            except Hang:
                misbehaving.append(f"{path.name}: took more than 10 s")
            except Exception as exc:  # noqa: BLE001 - this is what the test looks for
                misbehaving.append(f"{path.name}: {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
        cfio.set_max_pixels(DEFAULT_MAX_PIXELS)
    assert not misbehaving, "\n".join(misbehaving)
