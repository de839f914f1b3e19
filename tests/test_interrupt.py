"""SIGINT and SIGTERM in the middle of a run: prompt exit, no temporary or partial file, and a
parallel batch that --skip-existing then finishes with the bytes of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_stops_promptly_and_leaves_only_whole_files(tmp_path, signum, code):
    rng = np.random.default_rng(4)
    names = []
    for index in range(40):
        name = f"in{index:02d}.png"
        Image.fromarray(rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)).save(tmp_path / name)
        names.append(name)
    # --jobs 1: the run's own process does the work and is the one interrupted; -v names each output
    process = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "--jobs", "1", "-v", "-k", "gaussian:9:2",
                                "-k", "sobel-x", *names, "-o", "out/"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert first.startswith("wrote "), first
    process.send_signal(signum)
    started = time.monotonic()
    rest = process.stderr.read()
    process.wait(timeout=30)
    assert time.monotonic() - started < 5
    assert process.returncode == code, rest
    assert len(rest.splitlines()) >= 2, repr(first) + repr(rest)
    *_, summary, last = rest.splitlines()
    assert "" not in rest.splitlines(), rest
    assert last == ("Error: interrupted" if signum == signal.SIGINT else "Error: terminated")
    assert "Traceback" not in rest
    written = sorted(os.listdir(tmp_path / "out"))
    assert 0 < len(written) < 2 * len(names)
    # the summary counts the inputs finished; an input cut short may have written its first map only
    processed = int(summary.split(",")[0].removeprefix("processed "))
    assert summary == f"processed {processed}, failed 0, skipped 0"
    assert len(written) in (2 * processed, 2 * processed + 1), (summary, written)
    assert not [name for name in written if name.startswith(".")], written
    for name in written:
        with Image.open(tmp_path / "out" / name) as image:
            image.load()
            assert image.size == (600, 400)


KERNELS = ["-k", "gaussian:9:2", "-k", "sobel-x"]
BATCH_SIZE = 40


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A folder of noise images and the outputs of an uninterrupted --jobs 2 run over it."""
    root = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(7)
    (root / "in").mkdir()
    for index in range(BATCH_SIZE):
        Image.fromarray(rng.integers(0, 256, (160, 240, 3), dtype=np.uint8)).save(root / "in" / f"img{index:02d}.png")
    done = subprocess.run([sys.executable, "-m", "convfilter", "apply", *KERNELS, "--jobs", "2", "in", "-o", "ref/"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reference = {path.name: path.read_bytes() for path in (root / "ref").iterdir()}
    assert len(reference) == 2 * BATCH_SIZE
    return root, reference


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_parallel_batch_then_skip_existing_finishes_it(batch, tmp_path, signum, code):
    """Ctrl-C reaches the whole process group (as a terminal sends it); SIGTERM only the main process
    (as kill does). Either way the run stops within seconds, leaves whole files only, and a rerun with
    --skip-existing writes exactly the outputs of an uninterrupted run."""
    root, reference = batch
    out = tmp_path / "out"
    command = [sys.executable, "-m", "convfilter", "apply", *KERNELS, "--jobs", "2", str(root / "in"), "-o", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and sum(1 for p in out.iterdir() if not p.name.startswith(".")) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, "finished or stuck before the signal"
        time.sleep(0.01)
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    started = time.monotonic()
    _, err = process.communicate(timeout=30)
    stopped_after = time.monotonic() - started
    assert stopped_after < 5, f"took {stopped_after:.1f} s to stop"
    assert process.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert "" not in lines, err
    assert lines[-1] == ("Error: interrupted" if signum == signal.SIGINT else "Error: terminated"), err
    assert lines[-2].startswith("processed ") and lines[-2].endswith(", failed 0, skipped 0"), err
    left = sorted(os.listdir(out))
    assert not [name for name in left if name.startswith(".") or name.endswith(".part")], left  # no temporary files
    assert 0 < len(left) < 2 * BATCH_SIZE, "not stopped part-way"
    for name in left:  # whole files only: each decodes and equals the uninterrupted output
        with Image.open(out / name) as image:
            image.load()
        assert (out / name).read_bytes() == reference[name], name

    resumed = subprocess.run([*command, "--skip-existing"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    complete = {name[: -len("_sobel-x.png")] for name in left if name.endswith("_sobel-x.png")} & {
        name[: -len("_gaussian-9-2.png")] for name in left if name.endswith("_gaussian-9-2.png")}
    assert resumed.stderr == (f"processed {BATCH_SIZE - len(complete)}, failed 0, "
                              f"skipped {len(complete)}\n")
    assert {path.name: path.read_bytes() for path in out.iterdir()} == reference


@pytest.mark.parametrize("signum, message", [(signal.SIGINT, "Error: interrupted"),
                                             (signal.SIGTERM, "Error: terminated")], ids=["SIGINT", "SIGTERM"])
def test_last_words_reach_stderr_when_a_signal_skipped_a_readers_exit(tmp_path, signum, message):
    """A signal's exception can be raised at the first instruction of a capture's ``__exit__``
    (while an image is read, fd 2 goes into a capture file), before it holds signals back: that
    reader never gives fd 2 back. The command line gives it back before its last words, which
    reach the real stderr (a run through the server once lost "Error: interrupted" this way in
    the test suite). Here the reader is entered and never left, and the signal arrives while it
    holds fd 2."""
    script = (
        "import os\n"
        "from convfilter import cli\n"
        "from convfilter._stderr import LibraryStderr\n"
        "def run(*args, **kwargs):\n"
        "    LibraryStderr().__enter__()  # a reader whose __exit__ never runs\n"
        "    os.write(2, b'library text\\n')\n"
        f"    os.kill(os.getpid(), {int(signum)})\n"
        "    for _ in range(1000000):\n"
        "        pass\n"
        "cli.cli.main = run\n"
        "cli.main(['apply', 'x.png'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signum, done.stderr
    assert done.stderr.splitlines() == [message], done.stderr
