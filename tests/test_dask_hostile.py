"""Hostile files on a real Dask cluster: the same one Error line per file as a local run.

Every file of the hostile corpus (``tests/hostile.py``) and a decoder raising each exception
class (``tests/raising_plugin.py``) go to Dask workers; the lines, outputs and report must equal
a local run's, and no worker may die of a file. Its own LocalCluster (the fixture of
``test_dask.py``), so that the workers the plugin is registered on serve this module only.
"""

from __future__ import annotations

import os

from conftest import files_under
from test_dask import cluster, needs_dask, report_lines  # noqa: F401  (cluster: fixture)


@needs_dask
def test_hostile_files_and_any_exception_on_the_cluster_fail_as_locally(cluster, tmp_path):
    """Every file of the hostile corpus, and a decoder raising each exception class, on Dask workers:
    the same one Error line per file as a local run, and the workers live on."""
    import hostile
    import raising_plugin
    from test_hostile import RAISED, error_lines, run

    address, client = cluster
    client.wait_for_workers(2, timeout=30)
    workers = client.run(os.getpid)
    client.run(raising_plugin.register)  # the workers decode: they need the test plugin too
    folder = tmp_path / "in"
    hostile.write_corpus(folder)
    for exception, _ in RAISED:
        for stage in ("open", "load"):
            (folder / f"{exception}-{stage}.cfraise").write_bytes(raising_plugin.content(exception, stage, "boom"))
    args = ("apply", "-k", "sobel-x", "in", "-o", "out", "--report", "run.jsonl")
    code, err = run(*args, cwd=tmp_path, plugin=True)
    local_files, local_report = files_under(tmp_path / "out"), report_lines(tmp_path / "run.jsonl")
    (tmp_path / "out").rename(tmp_path / "out-local")
    remote_code, remote_err = run(*args, "--scheduler", address, cwd=tmp_path, plugin=True)
    assert remote_code == code == 1
    assert sorted(remote_err.splitlines()) == sorted(err.splitlines())
    assert all(line.startswith("Error: ") for line in remote_err.splitlines()[:-1]), remote_err
    failing = [name for name, expected in hostile.EXPECTED.items() if expected]
    assert len(error_lines(remote_err)) == len(failing) + 2 * len(RAISED)
    assert remote_err.splitlines()[-1] == f"processed 2, failed {len(failing) + 2 * len(RAISED)}, skipped 0"
    assert files_under(tmp_path / "out") == local_files and len(local_files) == 2
    assert report_lines(tmp_path / "run.jsonl") == local_report
    assert client.run(os.getpid) == workers  # no worker died of a file
