"""Folders, batches and pipelines, end to end: real files, real subprocesses, PNGs read back."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import BROKEN, GOOD, files_under, picture, run_convfilter
from convfilter.batch import Result
from convfilter.batch.console import Console
from convfilter.cli import cli
from convfilter.io import written_by_convfilter


def convfilter(*args, cwd, stdin=None, check=None):
    """Run the real command in a subprocess; return (exit code, stdout bytes, stderr text)."""
    done = run_convfilter(*args, cwd=cwd, input=stdin, text=False)
    if check is not None:
        assert done.returncode == check, done.stderr.decode()
    return done.returncode, done.stdout, done.stderr.decode()


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def outputs_of(names) -> set[str]:
    return {str(Path(n).with_suffix("")) + "_vertical.png" for n in names}


def test_folder_run_mirrors_the_tree_and_names_each_failure(tree, tmp_path):
    code, _, err = convfilter("apply", "-k", "vertical", "-r", tree, "-o", tmp_path / "out", "-j", "2",
                              cwd=tmp_path)
    assert code == 1
    assert set(files_under(tmp_path / "out")) == outputs_of(GOOD)
    lines = err.splitlines()
    for broken in BROKEN:
        assert sum(line.startswith(f"Error: {tree / broken}: ") for line in lines) == 1
    assert "notes.txt" not in err  # not an image: left out, and counted
    assert lines[-1] == "processed 4, failed 2, skipped 0; left out 1 non-image file"
    for name in GOOD:  # every output decodes and has the input's size (SAME padding)
        with Image.open(tmp_path / "out" / next(iter(outputs_of([name])))) as image:
            assert image.size == (32, 24) and image.mode == "L"


def test_batch_outputs_equal_single_file_runs(tree, tmp_path):
    invoke("apply", "-k", "sobel-x", "-r", tree, "-o", tmp_path / "out", "-j", "1", "-q")
    code, _ = invoke("apply", "-k", "sobel-x", tree / "sub" / "c.jpg", "-o", tmp_path / "single.png")
    assert code == 0
    assert (tmp_path / "out" / "sub" / "c_sobel-x.png").read_bytes() == (tmp_path / "single.png").read_bytes()


def test_jobs_do_not_change_a_single_byte(tree, tmp_path):
    args = ("apply", "-k", "vertical", "-k", "gaussian:5", "-r", tree, "-q")
    invoke(*args, "-o", tmp_path / "one", "-j", "1")
    invoke(*args, "-o", tmp_path / "two", "-j", "2")
    one, two = files_under(tmp_path / "one"), files_under(tmp_path / "two")
    assert len(one) == 2 * len(GOOD) and one == two


def test_a_folder_without_images_is_an_error(tree, tmp_path):
    code, output = invoke("apply", "-k", "vertical", tree / "empty", "-o", tmp_path / "out")
    assert code == 1
    assert f"Error: {tree / 'empty'}: no images in this folder" in output
    assert "processed 0, failed 1, skipped 0" in output


def test_skip_existing_touches_nothing(tree, tmp_path):
    out = tmp_path / "out"
    invoke("apply", "-k", "vertical", "-r", tree, "-o", out, "-q")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    time.sleep(0.01)
    code, output = invoke("apply", "-k", "vertical", "-r", tree, "-o", out, "--skip-existing")
    assert code == 1  # the broken files still fail
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert output.splitlines()[-1] == "processed 0, failed 2, skipped 4; left out 1 non-image file"


def test_from_list_on_stdin(tree, tmp_path):
    listing = "".join(f"{tree / name}\n" for name in GOOD + ["notes.txt"])
    code, _, err = convfilter("apply", "-k", "vertical", "--from-list", "-", "-o", "out", cwd=tmp_path,
                              stdin=listing.encode())
    assert code == 0, err
    assert set(files_under(tmp_path / "out")) == {Path(n).stem + "_vertical.png" for n in GOOD}
    assert err.splitlines()[-1] == "processed 4, failed 0, skipped 0; left out 1 non-image file"


def test_a_rerun_in_place_adds_nothing(tree, tmp_path):
    invoke("apply", "-k", "vertical", "-r", tree, "-o", tree, "-q")
    after_first = files_under(tree)
    assert outputs_of(GOOD) <= set(after_first)
    code, output = invoke("apply", "-k", "vertical", "-r", tree, "-o", tree)
    assert code == 1
    # our outputs were not inputs
    assert output.splitlines()[-1] == ("processed 4, failed 2, skipped 0; left out 1 non-image file and 4 files "
                                       "written by convfilter")
    assert files_under(tree) == after_first


def test_outputs_are_marked_in_every_format(tree, tmp_path):
    for fmt in ("png", "png16", "tiff", "npy"):
        invoke("apply", "-k", "vertical", tree / "a.jpg", "-f", fmt, "-o", tmp_path / fmt, "-q")
        (written,) = (tmp_path / fmt).iterdir()
        assert written_by_convfilter(str(written)), fmt
    assert not written_by_convfilter(str(tree / "b.png"))  # an ordinary PNG
    # a folder holding only outputs is empty for a run, unless asked
    code, output = invoke("pool", tmp_path / "tiff")
    assert code == 1 and "--include-outputs" in output
    code, output = invoke("pool", tmp_path / "tiff", "--include-outputs", "-f", "tiff", "-o", tmp_path / "p")
    assert code == 0 and len(list((tmp_path / "p").iterdir())) == 1


def test_an_input_is_never_overwritten(tree, tmp_path):
    mine = tree / "a_vertical.png"  # an ordinary image that happens to have an output's name
    picture(mine, 99)
    original = mine.read_bytes()
    code, output = invoke("apply", "-k", "vertical", tree / "a.jpg", mine, "-o", tree)
    assert code == 1
    assert f"Error: {tree / 'a.jpg'}: the output '{mine}' would overwrite an input" in output
    assert mine.read_bytes() == original


def test_name_template(tree, tmp_path):
    code, _ = invoke("apply", "-k", "vertical", "-k", "horizontal", "-r", tree, "-o", tmp_path / "out",
                     "--name", "{kernel}/{index:03d}-{stem}.{ext}", "-q")
    assert code == 1
    names = set(files_under(tmp_path / "out"))
    assert "vertical/000-a.png" in names and "horizontal/sub/deeper/005-d.png" not in names
    assert "sub/deeper/vertical/005-d.png" in names  # sub-folders mirror the tree, then the name


def test_inputs_sharing_a_stem_get_their_whole_names_by_default(tmp_path):
    for seed, name in enumerate(("hopper.png", "hopper.bmp", "other.png")):
        picture(tmp_path / "in" / name, seed)
    code, output = invoke("apply", "-k", "vertical", tmp_path / "in", "-o", tmp_path / "out")
    assert code == 0, output
    assert sorted(files_under(tmp_path / "out")) == ["hopper.bmp_vertical.png", "hopper.png_vertical.png",
                                                     "other_vertical.png"]
    code, output = invoke("apply", "-k", "vertical", tmp_path / "in", "-o", tmp_path / "named",
                          "--name", "{name}.{kernel}.{ext}")
    assert code == 0, output
    assert sorted(files_under(tmp_path / "named")) == ["hopper.bmp.vertical.png", "hopper.png.vertical.png",
                                                       "other.png.vertical.png"]


def test_a_name_clash_suggests_what_helps(tmp_path):
    for seed, name in enumerate(("a/hopper.png", "a/hopper.bmp", "b/hopper.png")):
        picture(tmp_path / name, seed)
    # a --name without the whole name: {name} helps
    code, output = invoke("apply", "-k", "vertical", tmp_path / "a", "-o", tmp_path / "out", "--name",
                          "{stem}-{kernel}.{ext}")
    assert code == 1
    (line,) = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert line.startswith(f"Error: {tmp_path / 'a' / 'hopper.png'}: the output ")
    assert "put {name} (the whole file name) in --name, e.g. --name '{name}_{kernel}.{ext}' or put {index}" in line
    assert " -r " not in line
    # one file name in two folders, named on the command line: their folders with -r help
    code, output = invoke("apply", "-k", "vertical", tmp_path / "a" / "hopper.png", tmp_path / "b" / "hopper.png",
                          "-o", tmp_path / "out2")
    assert code == 1
    assert "use their folder as the input with -r (sub-folders are mirrored) or put {index} in --name" in output
    # ... unless -r was used already
    code, output = invoke("apply", "-k", "vertical", "-r", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out3")
    assert code == 1
    (line,) = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert line.endswith("; put {index} in --name") and " -r " not in line.split(";")[1]


@pytest.mark.parametrize("template, message", [
    ("{stem}_{colour}.{ext}", "unknown field {colour}"),
    ("../{stem}_{kernel}.{ext}", "inside the output folder"),
    ("/tmp/{stem}_{kernel}.{ext}", "inside the output folder"),
    ("{stem}_{kernel", "--name"),
    ("{kernel}.{ext}", "put {stem}, {name} or {index} in it"),
    ("{stem}.{ext}", "put {kernel} in it"),
])
def test_bad_name_templates_are_usage_errors(tree, tmp_path, template, message):
    code, output = invoke("apply", "-k", "vertical", "-k", "horizontal", tree / "a.jpg", tree / "b.png",
                          "-o", tmp_path / "out", "--name", template)
    assert code == 2 and message in output
    assert not (tmp_path / "out").exists()


def test_several_maps_to_stdout_as_png_is_a_usage_error_with_a_hint(tree, tmp_path):
    code, output = invoke("apply", "-k", "vertical", "-k", "horizontal", tree / "a.jpg", "-o", "-")
    assert code == 2 and "-f npy" in output and "folder" in output


def test_values_on_stdout_come_in_input_order_whatever_the_jobs(tree):
    code, output = invoke("pool", "--type", "global-max", "-r", tree, "-j", "2", "-q")
    names = [line.split("\t")[0] for line in output.splitlines() if not line.startswith("Error:")]
    good = [str(tree / n) for n in ("a.jpg", "b.png", "sub/c.jpg", "sub/deeper/d.png")]
    assert code == 1 and names == [name for name in good for _ in range(3)]  # 3 channels each


def test_report_has_one_json_line_per_input(tree, tmp_path):
    report = tmp_path / "report.jsonl"
    invoke("apply", "-k", "vertical", "-r", tree, "-o", tmp_path / "out", "--report", report, "-j", "2")
    rows = {row["path"]: row for row in map(json.loads, report.read_text().splitlines())}
    assert set(rows) == {str(tree / n) for n in GOOD + BROKEN}
    good = rows[str(tree / "sub" / "c.jpg")]
    assert good["status"] == "processed" and good["error"] is None and good["seconds"] > 0
    assert good["outputs"] == [str(tmp_path / "out" / "sub" / "c_vertical.png")]
    assert good["shapes"] == [[24, 32, 1]]
    assert "image" in rows[str(tree / "garbage.png")]["error"]  # cannot decode image: ...


def test_fail_fast_stops_at_the_first_failure(tree, tmp_path):
    code, output = invoke("apply", "-k", "vertical", tree / "garbage.png", tree / "a.jpg", tree / "b.png",
                          "-o", tmp_path / "out", "-j", "1", "--fail-fast")
    assert code == 1
    assert "--fail-fast" in output and "2 inputs not run" in output
    assert not (tmp_path / "out").exists()


def test_quiet_and_verbose(tree, tmp_path):
    code, output = invoke("apply", "-k", "vertical", tree / "a.jpg", tree / "b.png", "-o", tmp_path / "q", "-q")
    assert code == 0 and output == ""
    code, output = invoke("apply", "-k", "vertical", tree / "a.jpg", tree / "b.png", "-o", tmp_path / "v", "-v")
    *wrote, summary = output.splitlines()  # files are named as they finish, in any order
    assert sorted(wrote) == [f"wrote {tmp_path / 'v' / 'a_vertical.png'}", f"wrote {tmp_path / 'v' / 'b_vertical.png'}"]
    assert summary == "processed 2, failed 0, skipped 0"
    code, output = invoke("apply", "-k", "vertical", tree / "a.jpg", "-o", tmp_path / "one.png")
    assert output == f"wrote {tmp_path / 'one.png'}\n"  # a single input says what it wrote


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal():
    for stream, expect_bar in ((Terminal(), True), (io.StringIO(), False)):
        console = Console(0, batch=True, total=3, stream=stream)
        for index in range(3):
            console.result(Result(index, f"f{index}.png", "processed", [f"o{index}.png"]))
        console.close()
        text = stream.getvalue()
        assert ("3/3" in text and "/s ETA" in text and "\r" in text) == expect_bar


def test_a_pipeline_gives_exactly_the_one_process_numbers(tmp_path):
    image = Path(__file__).resolve().parent.parent / "sample_images" / "china.jpg"
    run = f"'{sys.executable}' -m convfilter"
    chain = (f"{run} apply -k vertical '{image}' -f npy -o - | "
             f"{run} pool --type max --size 2 - -f npy -o chain.npy")
    done = subprocess.run(["sh", "-c", chain], cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    code, _ = invoke("apply", "-k", "vertical", "--pool", "max", "--pool-size", "2", image, "-f", "npy",
                     "-o", tmp_path / "one.npy")
    assert code == 0
    chained, one = np.load(tmp_path / "chain.npy"), np.load(tmp_path / "one.npy")
    assert chained.shape == (213, 320, 1) and chained.dtype == np.float32
    assert np.array_equal(chained, one)


def test_ctrl_c_leaves_only_whole_files(tmp_path):
    source = tmp_path / "many"
    for seed in range(120):
        picture(source / f"img{seed:03d}.png", seed, size=(160, 160))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "-k", "gaussian:31", source,
                                "-o", out, "-j", "2"], cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (out.exists() and any(p.suffix == ".png" for p in out.iterdir())):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    left = list(out.iterdir())
    assert 0 < len(left) < 120  # stopped part-way
    assert all(p.suffix == ".png" and not p.name.startswith(".") for p in left), left  # no .part files
    for path in left:
        with Image.open(path) as image:
            image.load()  # raises on a truncated file
            assert image.size == (160, 160)


class DiesOn:
    """Work that kills its own process on one input, as the OOM killer would."""

    def __init__(self, fatal: str):
        self.fatal = fatal

    def __call__(self, job):
        if job.source == self.fatal:
            os.kill(os.getpid(), signal.SIGKILL)
        return Result(job.index, job.source, "processed", [str(os.getpid())])


def test_process_executor_yields_one_result_per_job_and_survives_a_lost_worker():
    from convfilter.batch import Job
    from convfilter.batch.executors import ProcessExecutor

    jobs = [Job(index, f"in{index}") for index in range(12)]
    with ProcessExecutor(2) as executor:
        results = list(executor.map_unordered(DiesOn("in5"), jobs))
    assert sorted(r.index for r in results) == list(range(12))
    failed = [r for r in results if r.status == "failed"]
    assert [(r.source, r.error) for r in failed] == [("in5", "the worker process died (killed by signal 9)")]
    assert str(os.getpid()) not in {pid for r in results for pid in r.outputs}  # ran in other processes


def test_lists_are_lines_or_nul_separated_and_a_missing_list_is_a_usage_error(tmp_path):
    from convfilter.batch.inputs import read_list

    assert read_list("-", io.BytesIO(b"a b.jpg\n\nsub/c.png\n")) == ["a b.jpg", "sub/c.png"]
    assert read_list("-", io.BytesIO(b"x\ny.jpg\0z.png\0")) == ["x\ny.jpg", "z.png"]  # find -print0
    code, output = invoke("apply", "-k", "vertical", "--from-list", tmp_path / "missing.txt")
    assert code == 2 and "missing.txt" in output and "no such file" in output


class ReportsThreads:
    """Work that reports how many threads a large kernel call would use in this process."""

    def __call__(self, job):
        from convfilter import ops

        return Result(job.index, job.source, "processed", [str(ops.get_num_threads())])


def test_worker_processes_run_the_kernels_on_one_thread(monkeypatch):
    from convfilter import ops
    from convfilter.batch import Job
    from convfilter.batch.executors import ProcessExecutor

    monkeypatch.delenv("CONVFILTER_NUM_THREADS", raising=False)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    ops.set_num_threads(None)
    jobs = [Job(index, f"in{index}") for index in range(4)]
    with ProcessExecutor(2) as executor:
        results = list(executor.map_unordered(ReportsThreads(), jobs))
    assert {r.outputs[0] for r in results} == {"1"}  # workers x threads never exceeds --jobs
