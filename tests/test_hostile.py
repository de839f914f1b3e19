"""Hostile files end to end: one ``Error: FILE: reason`` line each, nothing else on stderr.

The corpus (``tests/hostile.py``) reproduces what real files did to convfilter: plugins raising
NotImplementedError, libraries printing on stderr, formats recognised then refused, truncated
data, an image extension on garbage, two inputs with one stem. Each goes through the single-file
path, a ``-j 1`` and a ``-j 2`` batch (the Dask worker path is in ``test_dask.py``). A test plugin
(``tests/raising_plugin.py``) raises every class of exception a decoder may raise.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hostile
import raising_plugin
from conftest import CHECKOUT_ENV
from convfilter import _signals
from convfilter import io as cfio
from convfilter._signals import install_held
from convfilter._stderr import LibraryStderr
from convfilter.diagnosis import library_words
from convfilter.messages import WORDS_LIMIT, shorten

TESTS = Path(__file__).resolve().parent
WITH_PLUGIN = "import sys, raising_plugin\nfrom convfilter.cli import main\nmain(sys.argv[1:])"
READABLE = 500  # what was recognised, the reason in plain words, the library's (cut), a hint


def run(*args, cwd, plugin=False) -> tuple[int, str]:
    """The real command in a subprocess (with the raising plugin loaded if asked): (exit code, stderr)."""
    command = [sys.executable, "-c", WITH_PLUGIN] if plugin else [sys.executable, "-m", "convfilter"]
    env = {**CHECKOUT_ENV, "PYTHONPATH": os.pathsep.join([str(TESTS), CHECKOUT_ENV["PYTHONPATH"]])}
    done = subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env, stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr


def error_lines(stderr: str) -> dict[str, str]:
    """``{file name: reason}`` of the Error lines; fails on a file named twice."""
    found = {}
    for line in stderr.splitlines():
        if line.startswith("Error: "):
            path, reason = line[len("Error: "):].split(": ", 1)
            assert Path(path).name not in found, f"{path} reported twice"
            found[Path(path).name] = reason
    return found


def check_reasons(errors: dict[str, str], expected: dict) -> None:
    for name, fragments in expected.items():
        if fragments is None:
            assert name not in errors, errors[name]
            continue
        assert name in errors, f"{name}: no Error line"
        for fragment in fragments:
            assert fragment in errors[name], f"{name}: {fragment!r} not in {errors[name]!r}"
        assert len(errors[name]) <= READABLE


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile") / "in"
    hostile.write_corpus(folder)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


FAILING = sorted(name for name, expected in hostile.EXPECTED.items() if expected)


@pytest.mark.parametrize("name", FAILING)
def test_each_hostile_file_alone_is_one_error_line(corpus, tmp_path, name):
    code, err = run("apply", "-k", "sobel-x", corpus / name, "-o", tmp_path / "out/", cwd=tmp_path)
    assert code == 1
    assert len(err.splitlines()) == 1, err  # no traceback, no library line, no second line
    check_reasons(error_lines(err), {name: hostile.EXPECTED[name]})
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_folder_of_hostile_files_goes_on_and_counts_everything(corpus, tmp_path, jobs):
    report = tmp_path / "run.jsonl"
    code, err = run("apply", "-k", "sobel-x", corpus, "-o", tmp_path / "out", "-j", jobs, "--report", report,
                    cwd=tmp_path)
    assert code == 1
    *lines, summary = err.splitlines()
    assert all(line.startswith("Error: ") for line in lines), err
    errors = error_lines(err)
    check_reasons(errors, hostile.EXPECTED)
    assert set(errors) == set(FAILING)  # every file with an image extension is an input, .dds too
    assert summary == f"processed 2, failed {len(FAILING)}, skipped 0; left out 1 non-image file"
    # two inputs with one stem: the default names fall back on the whole file names
    assert sorted(os.listdir(tmp_path / "out")) == ["hopper.bmp_sobel-x.png", "hopper.png_sobel-x.png"]
    rows = {Path(row["path"]).name: row for row in map(json.loads, report.read_text().splitlines())}
    assert set(rows) == set(hostile.EXPECTED)
    for name in FAILING:
        assert rows[name]["status"] == "failed" and rows[name]["detail"].startswith(rows[name]["error"])


def test_verbose_names_the_files_left_out(corpus, tmp_path):
    code, err = run("apply", "-k", "sobel-x", corpus, "-o", tmp_path / "out", "-j", "1", "-v", cwd=tmp_path)
    assert f"left out {corpus / 'notes.txt'} (not an image)" in err.splitlines()


# --- every exception class a decoder can raise -------------------------------------------------

RAISED = [("NotImplementedError", "a variant of the format"), ("RecursionError", "recursed too deeply"),
          ("MemoryError", "not enough memory"), ("ZeroDivisionError", "ZeroDivisionError: boom"),
          ("RuntimeError", "RuntimeError: boom"), ("StderrThenOSError", "cfraise: boom")]


@pytest.fixture(scope="module")
def raising(tmp_path_factory) -> Path:
    """A good PNG between files whose decoding raises each exception class, at open and at load."""
    folder = tmp_path_factory.mktemp("raising") / "in"
    folder.mkdir()
    for exception, _ in RAISED:
        for stage in ("open", "load"):
            (folder / f"{exception}-{stage}.cfraise").write_bytes(raising_plugin.content(exception, stage, "boom"))
    (folder / "good.png").write_bytes(hostile.good_png())
    return folder


@pytest.mark.parametrize("exception, fragment", RAISED)
def test_any_exception_alone_is_one_error_line(raising, tmp_path, exception, fragment):
    for stage in ("open", "load"):
        path = raising / f"{exception}-{stage}.cfraise"
        code, err = run("apply", "-k", "sobel-x", path, "-o", tmp_path / "out/", cwd=tmp_path, plugin=True)
        assert code == 1
        assert err.splitlines() == [f"Error: {path}: {error_lines(err)[path.name]}"], err
        assert fragment in err


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_any_exception_in_a_batch_fails_that_file_only(raising, tmp_path, jobs):
    code, err = run("apply", "-k", "sobel-x", raising, "-o", tmp_path / "out", "-j", jobs, cwd=tmp_path,
                    plugin=True)
    assert code == 1
    *lines, summary = err.splitlines()
    assert all(line.startswith("Error: ") for line in lines), err  # no traceback, no dead worker
    errors = error_lines(err)
    for exception, fragment in RAISED:
        for stage in ("open", "load"):
            assert fragment in errors[f"{exception}-{stage}.cfraise"]
    assert summary == f"processed 1, failed {2 * len(RAISED)}, skipped 0"
    assert os.listdir(tmp_path / "out") == ["good_sobel-x.png"]


def test_a_long_library_message_is_cut_on_the_line_and_whole_in_the_report(tmp_path):
    words = " ".join(f"complaint{i} about tag {i}" for i in range(200))
    path = tmp_path / "long.cfraise"
    path.write_bytes(raising_plugin.content("OSError", "load", words))
    code, err = run("apply", "-k", "sobel-x", path, "-o", tmp_path / "out/", "--report", tmp_path / "r.jsonl",
                    cwd=tmp_path, plugin=True)
    (line,) = err.splitlines()
    reason = error_lines(err)["long.cfraise"]
    assert len(reason) <= READABLE and reason.endswith(" ...)")
    library = reason[reason.index("(complaint0"):]
    assert len(library) <= WORDS_LIMIT + 2 and library[1:-5].split()[-1] in words.split()  # cut between words
    (row,) = map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())
    assert row["error"] == reason and words in row["detail"]


# --- --accept-truncated --------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_accept_truncated_reads_them_and_says_so(corpus, tmp_path, jobs):
    report = tmp_path / "run.jsonl"
    files = [corpus / name for name in (*hostile.ACCEPTED_TRUNCATED, "hopper.png")]
    code, err = run("apply", "-k", "sobel-x", *files, "-o", tmp_path / "out", "-j", jobs, "--accept-truncated",
                    "--report", report, cwd=tmp_path)
    assert code == 0, err
    *lines, summary = err.splitlines()
    warnings = [line for line in lines if line.startswith("Warning: ")]
    assert sorted(Path(line.split(": ")[1]).name for line in warnings) == sorted(hostile.ACCEPTED_TRUNCATED), err
    assert all("the file is truncated" in line for line in warnings)
    assert all(line.startswith("wrote ") for line in lines if line not in warnings), err  # a handful is named
    assert summary == "processed 3, failed 0, skipped 0"
    rows = {Path(row["path"]).name: row for row in map(json.loads, report.read_text().splitlines())}
    for name in hostile.ACCEPTED_TRUNCATED:
        assert rows[name]["status"] == "processed"
        assert any("truncated" in warning for warning in rows[name]["warnings"])
    assert rows["hopper.png"]["warnings"] == []
    assert len(os.listdir(tmp_path / "out")) == 3


def test_a_truncated_png_keeps_the_rows_it_holds(corpus):
    whole = np.asarray(Image.open(__import__("io").BytesIO(hostile.good_png())), np.float32) / 255
    loaded = cfio.load(str(corpus / "truncated.png"), accept_truncated=True)
    assert loaded.array.shape == whole.shape and len(loaded.warnings) == 1
    np.testing.assert_array_equal(loaded.array[:10], whole[:10])  # the first rows are all there
    assert not np.array_equal(loaded.array, whole)  # and the rest is filler
    with pytest.raises(cfio.InputError, match="--accept-truncated"):
        cfio.load(str(corpus / "truncated.png"))  # nothing leaks into the next read


def test_accepting_truncation_in_one_thread_does_not_leak_into_another(corpus):
    path = str(corpus / "truncated.jpg")
    barrier = threading.Barrier(2)
    fates = {}

    def read(accept: bool) -> None:
        for _ in range(20):
            barrier.wait()
            try:
                cfio.load(path, accept_truncated=accept)
                fates.setdefault(accept, set()).add("read")
            except cfio.InputError:
                fates.setdefault(accept, set()).add("refused")

    threads = [threading.Thread(target=read, args=(accept,)) for accept in (True, False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fates == {True: {"read"}, False: {"refused"}}


# --- the pieces ---------------------------------------------------------------------------------


def test_library_words_drop_repeats_and_count_lines_alike():
    text = ("tempfile.tif: WEBP compression support is not configured.\n" * 3
            + "TIFFFetchNormalTag: custom tag 0 is undefined\nTIFFFetchNormalTag: custom tag 196 is undefined\n"
            + "TIFFFetchNormalTag: custom tag 197 is undefined\n")
    assert library_words("decoder error -2", text) == (
        "decoder error -2; WEBP compression support is not configured; "
        "TIFFFetchNormalTag: custom tag 0 is undefined (and 2 more like it)")


def test_shorten_cuts_at_a_word_with_an_ellipsis():
    assert shorten("short  text\n on two lines") == "short text on two lines"
    text = " ".join(["word"] * 100)
    cut = shorten(text, 50)
    assert len(cut) <= 50 and cut.endswith("word ...") and cut.count("word") == 9
    assert shorten("x" * 80, 50) == "x" * 46 + " ..."  # one long word: cut inside it


def test_library_stderr_catches_c_level_writes_and_restores_the_descriptor(capfd):
    libc = ctypes.CDLL(None)
    before = os.fstat(2)
    with LibraryStderr() as outer:
        os.write(2, b"from the descriptor\n")
        libc.write(2, b"from C\n", 7)
        with LibraryStderr() as inner:  # nested and concurrent readers share the capture
            os.write(2, b"inner\n")
        assert inner.text() == "inner\n"
    assert outer.text() == "from the descriptor\nfrom C\ninner\n"
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("moment", ["_redirect", "_read"])
def test_ctrl_c_while_the_descriptor_is_redirected_or_restored_still_gives_it_back(monkeypatch, moment):
    # a Ctrl-C that lands just after fd 2 went to the capture file, or while the capture is read,
    # must not leave fd 2 there: the summary and "Error: interrupted" would vanish into it. The
    # command line's handler (held back inside such blocks) is installed as convfilter.cli does.
    previous = signal.getsignal(signal.SIGINT)
    install_held(signal.SIGINT, signal.default_int_handler)
    original = getattr(LibraryStderr, moment)

    def interrupted(*args):
        result = original(*args)
        os.kill(os.getpid(), signal.SIGINT)  # held back until the descriptor is in a whole state
        return result

    monkeypatch.setattr(LibraryStderr, moment, interrupted if moment == "_read" else classmethod(
        lambda cls: interrupted()))
    before = os.fstat(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            with LibraryStderr():
                for _ in range(1000):  # the deferred signal is raised here at the latest (or on the way out)
                    time.sleep(0.001)
        after = os.fstat(2)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
        assert LibraryStderr._users == 0 and LibraryStderr._saved is None
    finally:  # a failure here must not leave the descriptor redirected for the tests after it
        signal.signal(signal.SIGINT, previous)
        if LibraryStderr._saved is not None:
            LibraryStderr._users = 0
            LibraryStderr._restore()


def test_library_stderr_from_threads_each_get_their_own_and_more(capfd):
    texts = {}
    started = threading.Barrier(4)

    def reader(number: int) -> None:
        with LibraryStderr() as capture:
            started.wait()
            os.write(2, f"reader {number}\n".encode())
            started.wait()
            texts[number] = capture.text()

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, text in texts.items():  # a reader may see its neighbours' lines, never lose its own
        assert f"reader {number}\n" in text
    assert capfd.readouterr().err == ""
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@pytest.mark.parametrize("exception, words, plain", [
    ("OSError", "decoder error -2", "the file is damaged or truncated"),
    ("OSError", "[Errno 22] Invalid argument", "the file is damaged or truncated"),
    ("OSError", "buffer overrun when reading image file", "the file is damaged or truncated"),
    ("OSError", "broken data stream when reading image file", "the file is damaged or truncated"),
    ("OSError", "image file is truncated", "the file is truncated"),
    ("OSError", "Truncated File Read", "the file is truncated"),
    ("OSError", "Expected to read 8 bytes but only got 0.", "the file is truncated"),
    ("EOFError", "Unable to seek to frame", "a frame or page that is not there"),
    ("OSError", "cannot find loader for this GRIB file", "Pillow recognises this GRIB file but decodes it only "
                                                         "with a plugin"),
    ("OSError", "cannot find loader for this HDF5 file", "this HDF5 file"),
    ("NotImplementedError", "Unimplemented pixel format 0", "a variant of the format"),
])
def test_cryptic_library_messages_are_translated_keeping_their_words(tmp_path, exception, words, plain):
    path = tmp_path / "f.cfraise"
    path.write_bytes(raising_plugin.content(exception, "load", words))
    with pytest.raises(cfio.InputError) as info:
        cfio.load(str(path))
    message = str(info.value)
    assert message.startswith("cannot decode this CFRAISE image (L, 8x6): ")
    assert plain in message
    assert words.rstrip(".") in message  # the library's own words follow


@pytest.mark.parametrize("name", ["unimplemented_dxgi.dds", "samples_65535.tif"])
def test_shape_reports_a_hostile_header_in_one_line(corpus, tmp_path, name):
    code, err = run("shape", corpus / name, "-k", "vertical", cwd=tmp_path)
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith(f"Error: {corpus / name}: recognised as ")  # as apply says it
    assert hostile.EXPECTED[name][-1] in line


def test_a_signal_whose_exception_a_finalizer_swallowed_is_raised_again_outside_it():
    # a Ctrl-C that lands inside an object's __del__ (the garbage collector's, at any moment) is
    # printed as "Exception ignored" by Python and lost; the held handlers send it again
    previous_handler, previous_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    install_held(signal.SIGINT, signal.default_int_handler, raises=KeyboardInterrupt)

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt  # as the handler would, had the signal arrived here

    assert not _signals._held  # no block of an earlier test left signals held
    try:
        with pytest.raises(KeyboardInterrupt):
            Finalized()  # dropped at once: __del__ runs, its exception is swallowed and sent again
            deadline = time.monotonic() + 10  # the timer thread's 1 ms, on a machine under load
            while time.monotonic() < deadline:
                time.sleep(0.001)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook


def test_an_exception_forgotten_by_the_held_handlers_is_no_longer_sent_again():
    """After ``forget_raised`` (the server, its warm-up done), a swallowed exception of that type
    goes to the hook there was before, and no signal follows."""
    previous_handler, previous_hook = signal.getsignal(signal.SIGINT), sys.unraisablehook
    seen = []
    sys.unraisablehook = lambda unraisable: seen.append(type(unraisable.exc_value))
    install_held(signal.SIGINT, signal.default_int_handler, raises=KeyboardInterrupt)
    _signals.forget_raised(KeyboardInterrupt)

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt

    try:
        Finalized()
        time.sleep(0.2)  # a signal sent again would have raised here
        assert seen == [KeyboardInterrupt]
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook
