"""The same batch on a real Dask cluster: a LocalCluster of two worker processes on loopback.

Every run here is compared with the same run done locally (no ``--scheduler``):
the output bytes, the exit code, the error lines, the summary and the
``--report`` lines must not tell the two apart. The cluster is started once
for the module, with ``allowed-failures`` 1 so that a file that kills its
workers is given up after two deaths. Two more settings keep the timings to
what the tests are about on a loaded machine: a result fetched from a worker at
the moment it dies makes Dask's scheduler retry the dead address for the
connect timeout (30 s by default, 10 s here), and the cluster drops for good a
worker whose restart takes longer than its lost-worker timeout (15 s by
default, 120 s here).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from conftest import BROKEN, GOOD, files_under, picture
from test_batch import convfilter

from convfilter.batch import Job, Result

needs_dask = pytest.mark.skipif(find_spec("distributed") is None,
                                reason="needs dask[distributed] (pip install 'convfilter[dask]')")


@pytest.fixture(scope="module")
def cluster():
    """(scheduler address, a client) of two single-threaded worker processes on 127.0.0.1."""
    import dask
    from distributed import Client, LocalCluster

    settings = {"distributed.scheduler.allowed-failures": 1, "distributed.comm.timeouts.connect": "10s",
                "distributed.deploy.lost-worker-timeout": "120s"}
    with dask.config.set(settings):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, scheduler_port=0) as local:
            with Client(local.scheduler_address, set_as_default=False) as client:
                yield local.scheduler_address, client


def both(*args, cwd, address, stdin=None):
    """The same command run locally and on the cluster: ((code, stdout, stderr), (code, stdout, stderr))."""
    return (convfilter(*args, cwd=cwd, stdin=stdin),
            convfilter(*args, "--scheduler", address, cwd=cwd, stdin=stdin))


def report_lines(path: Path) -> list[dict]:
    """The --report lines without their timings, in path order."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for line in lines:
        assert line.pop("seconds") >= 0
    return sorted(lines, key=lambda line: line["path"])


def test_without_scheduler_dask_is_never_imported(tmp_path):
    picture(tmp_path / "a.png", 0)
    picture(tmp_path / "b.png", 1)
    script = ("import sys\nfrom convfilter.cli import main\n"
              "try:\n    main(['apply', '-k', 'vertical', 'a.png', 'b.png', '-o', 'out', '-q', '-j', '2'])\n"
              "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert sorted(os.listdir(tmp_path / "out")) == ["a_vertical.png", "b_vertical.png"]


def test_a_missing_extra_is_one_line_with_the_install_command(tmp_path):
    picture(tmp_path / "a.png", 0)
    hide_dask = ("import sys\nclass Hide:\n    def find_spec(self, name, path=None, target=None):\n"
                 "        if name.split('.')[0] in ('dask', 'distributed'):\n"
                 "            raise ModuleNotFoundError(name)\n"
                 "sys.meta_path.insert(0, Hide())\nfrom convfilter.cli import main\n"
                 "main(['apply', '-k', 'vertical', 'a.png', '-o', 'out/', '--scheduler', 'tcp://127.0.0.1:8786'])")
    done = subprocess.run([sys.executable, "-c", hide_dask], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["Error: --scheduler needs Dask's distributed scheduler; "
                                        "install it with: pip install 'convfilter[dask]'"]
    assert not (tmp_path / "out").exists()


@needs_dask
def test_an_unreachable_or_malformed_scheduler_is_exit_2_before_any_output(tmp_path):
    picture(tmp_path / "a.png", 0)
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="1s")
    done = subprocess.run([sys.executable, "-m", "convfilter", "apply", "-k", "vertical", "a.png", "-o", "out/",
                           "--report", "run.jsonl", "--scheduler", "tcp://127.0.0.1:9"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["Error: --scheduler tcp://127.0.0.1:9: cannot connect to a Dask "
                                        "scheduler (Timed out trying to connect to tcp://127.0.0.1:9 after 1 s)"]
    code, _, err = convfilter("apply", "-k", "vertical", "a.png", "-o", "out/", "--scheduler", "no-port",
                              cwd=tmp_path)
    assert code == 2 and "--scheduler 'no-port' is not a Dask scheduler address" in err
    assert "Traceback" not in err
    code, _, err = convfilter("apply", "-k", "vertical", "a.png", "-o", "out/", "--scheduler", "tcp://127.0.0.1:9",
                              "--jobs", "2", cwd=tmp_path)
    assert code == 2 and "--jobs sets local worker processes" in err
    assert sorted(os.listdir(tmp_path)) == ["a.png"]  # no output folder, no report


@needs_dask
def test_a_cluster_run_equals_the_local_run(cluster, tree, tmp_path):
    address, _ = cluster
    # relative paths: the workers, whose working folder is not ours, must resolve them against ours
    args = ("apply", "-k", "vertical", "-k", "gaussian:5", "-r", "tree", "-o", "out", "--report", "run.jsonl")
    code, _, err = convfilter(*args, cwd=tmp_path)
    local_files, local_report = files_under(tmp_path / "out"), report_lines(tmp_path / "run.jsonl")
    (tmp_path / "out").rename(tmp_path / "out-local")
    assert code == 1
    assert len(local_files) == 2 * len(GOOD)
    assert [line["outputs"][0].startswith("out/") for line in local_report if line["outputs"]] == [True] * len(GOOD)
    remote_code, _, remote_err = convfilter(*args, "--scheduler", address, cwd=tmp_path)
    assert remote_code == code
    assert files_under(tmp_path / "out") == local_files
    assert sorted(remote_err.splitlines()) == sorted(err.splitlines())  # failures arrive in any order
    assert remote_err.splitlines()[-1] == err.splitlines()[-1] == "processed 4, failed 2, skipped 0; left out 1 non-image file"
    assert sum(line.startswith("Error: tree/") for line in remote_err.splitlines()) == len(BROKEN)
    assert report_lines(tmp_path / "run.jsonl") == local_report


@needs_dask
def test_skip_existing_on_the_cluster_touches_nothing(cluster, tree, tmp_path):
    address, _ = cluster
    convfilter("apply", "-k", "vertical", "-r", tree, "-o", "out", "-q", cwd=tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    code, _, err = convfilter("apply", "-k", "vertical", "-r", tree, "-o", "out", "--skip-existing",
                              "--scheduler", address, cwd=tmp_path)
    assert code == 1  # the broken files still fail, on the workers
    assert err.splitlines()[-1] == "processed 0, failed 2, skipped 4; left out 1 non-image file"
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == before


@needs_dask
def test_stdin_and_stdout_travel_with_the_jobs(cluster, tree, tmp_path):
    address, _ = cluster
    image = (tree / "a.jpg").read_bytes()
    local, remote = both("apply", "-k", "sobel-x", "-", "-f", "npy", "-o", "-", cwd=tmp_path, address=address,
                         stdin=image)
    assert local[0] == remote[0] == 0
    assert remote[1] == local[1] and len(local[1]) > 24 * 32 * 4
    local, remote = both("pool", "--type", "global-avg", tree / "a.jpg", tree / "b.png", tree / "sub",
                         cwd=tmp_path, address=address)
    assert remote[:2] == local[:2]
    assert len(local[1].decode().splitlines()) == 3 * 3  # three inputs, three channels, in input order


def slow_folder(folder: Path, count: int) -> list[str]:
    """``count`` noisy 300x400 PNGs: a few tenths of a second each through two 9x9 kernels."""
    rng = np.random.default_rng(6)
    folder.mkdir()
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(folder / f"in{index:02d}.png")
    return sorted(os.listdir(folder))


def assert_whole_outputs(folder: Path, names: list[str]) -> None:
    """Every output present decodes whole; hidden files may only be temporary files of killed workers."""
    for name in names:
        with Image.open(folder / name) as image:
            image.load()
            assert image.size == (400, 300)
    assert all(name.endswith(".part") for name in os.listdir(folder) if name.startswith("."))


@needs_dask
def test_killing_a_worker_mid_run_still_completes_the_batch(cluster, tmp_path):
    address, client = cluster
    inputs = slow_folder(tmp_path / "in", 24)
    before = client.run(os.getpid)
    process = subprocess.Popen([sys.executable, "-m", "convfilter", "apply", "-k", "gaussian:9:2", "-k", "box",
                                "in", "-o", "out", "-v", "--report", "run.jsonl", "--scheduler", address],
                               cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert first.startswith("wrote "), first
    os.kill(min(before.values()), signal.SIGKILL)  # while both workers are busy with the rest
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 0, rest
    assert rest.splitlines()[-1] == f"processed {len(inputs)}, failed 0, skipped 0"
    expected = sorted(f"{Path(n).stem}_{k}.png" for n in inputs for k in ("gaussian-9-2", "box"))
    assert sorted(n for n in os.listdir(tmp_path / "out") if not n.startswith(".")) == expected
    assert_whole_outputs(tmp_path / "out", expected)
    assert [line["status"] for line in report_lines(tmp_path / "run.jsonl")] == ["processed"] * len(inputs)
    client.wait_for_workers(2, timeout=120)  # a restarted worker can take long on a loaded machine
    assert min(before.values()) not in client.run(os.getpid).values()  # the worker did die


def test_a_worker_with_another_convfilter_version_fails_its_files_with_a_reason(tree):
    from convfilter.batch.dask_executor import run_jobs

    jobs = [Job(0, str(tree / "a.jpg")), Job(1, str(tree / "b.png"))]
    results = run_jobs(KillsItsWorker("nothing"), jobs, "0.0.1")
    assert [(r.index, r.status) for r in results] == [(0, "failed"), (1, "failed")]
    assert results[0].error.startswith("the Dask worker has convfilter ")
    assert results[0].error.endswith(", this client 0.0.1; install the same version on the workers")


class KillsItsWorker:
    """Work that kills the worker process on one file (as a crashing native library would)."""

    def __init__(self, deadly: str):
        self.deadly = deadly

    def __call__(self, job: Job) -> Result:
        if job.source == self.deadly:
            os.kill(os.getpid(), signal.SIGKILL)
        return Result(job.index, job.source, "processed", seconds=0.001)


@pytest.mark.slow
@needs_dask
def test_a_file_that_kills_its_workers_is_reported_alone_not_retried_forever(cluster):
    import cloudpickle

    from convfilter.batch.dask_executor import MAX_FILES_PER_TASK, DaskExecutor

    address, client = cluster
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test file
    jobs = [Job(index, f"file{index:02d}") for index in range(40)]
    deadly = "file30"  # quick files are grouped by then: the whole group dies, then its files go one by one
    started = time.monotonic()
    with DaskExecutor(address) as executor:
        results = {r.source: r for r in executor.map_unordered(KillsItsWorker(deadly), jobs)}
    assert time.monotonic() - started < 30
    assert sorted(results) == [job.source for job in jobs]
    assert results.pop(deadly).error == ("2 Dask workers died while processing it (out of memory? see the "
                                         "workers' logs); not retried further")
    assert {r.status for r in results.values()} == {"processed"}, [r for r in results.values() if r.error]
    assert MAX_FILES_PER_TASK > 1
    client.wait_for_workers(2, timeout=120)  # a restarted worker can take long on a loaded machine


def interrupt_after_first_write(command: list[str], cwd: Path) -> float:
    """Run ``command`` (with ``-v``), press Ctrl-C once it has written a file; assert it exits with
    130 and "Error: interrupted", no traceback; the seconds it took to exit."""
    process = subprocess.Popen(command, cwd=cwd, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    assert first.startswith("wrote "), first
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 130, rest
    seconds = time.monotonic() - started
    assert rest.splitlines()[-1] == "Error: interrupted" and "Traceback" not in rest
    return seconds


@pytest.mark.slow
@needs_dask
def test_ctrl_c_stops_a_cluster_run_leaving_only_whole_files(cluster, tmp_path):
    address, client = cluster
    client.wait_for_workers(2, timeout=120)  # a restarted worker can take long on a loaded machine
    inputs = slow_folder(tmp_path / "in", 24)
    seconds = interrupt_after_first_write([sys.executable, "-m", "convfilter", "apply", "-k", "gaussian:9:2",
                                           "-k", "box", "in", "-o", "out", "-v", "--scheduler", address], tmp_path)
    assert seconds < 5
    time.sleep(1)  # tasks already running on the workers finish their file (whole) after we stop
    written = sorted(n for n in os.listdir(tmp_path / "out") if not n.startswith("."))
    assert 0 < len(written) < 2 * len(inputs)
    assert_whole_outputs(tmp_path / "out", written)


# the client's disconnect never finishes, as when the scheduler stops answering mid-close
HUNG_CLOSE = ("import asyncio, sys\nimport distributed\n"
              "async def never(self, fast=False):\n    await asyncio.Event().wait()\n"
              "distributed.Client._close = never\n"
              "from convfilter.cli import main\nmain(sys.argv[1:])\n")


@pytest.mark.slow
@needs_dask
def test_a_scheduler_that_never_lets_go_delays_the_exit_only_so_long(cluster, tmp_path):
    from convfilter.batch.dask_executor import CLOSE_SECONDS, CLOSE_SECONDS_INTERRUPTED

    address, client = cluster
    client.wait_for_workers(2, timeout=120)
    slow_folder(tmp_path / "in", 24)
    seconds = interrupt_after_first_write([sys.executable, "-c", HUNG_CLOSE, "apply", "-k", "gaussian:9:2", "in",
                                           "-o", "out", "-v", "--scheduler", address], tmp_path)
    assert seconds < CLOSE_SECONDS_INTERRUPTED + 3

    started = time.monotonic()  # a run that ends gives up on the scheduler too, with its outputs written
    done = subprocess.run([sys.executable, "-c", HUNG_CLOSE, "apply", "-k", "box", "in/in00.png", "-o", "out2",
                           "--scheduler", address], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < CLOSE_SECONDS + 15  # start-up and connecting included
    assert done.stderr.splitlines() == ["wrote out2/in00_box.png"]
    assert os.listdir(tmp_path / "out2") == ["in00_box.png"]
