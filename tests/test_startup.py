"""Start-up behaviour in real subprocesses: light commands stay light, warmup fills the cache,
and a read-only install with no usable home still runs (the cache falls back elsewhere)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "convfilter"


def run_python(code: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("argv", [["--help"], ["kernels"], ["kernels", "gaussian:5"],
                                  ["shape", "--size", "427x640x3", "-k", "vertical", "--pool", "max"],
                                  ["warmup", "--help"], ["model", "--help"], ["model", "apply", "--help"],
                                  ["model", "predict", "--help"], ["model", "summary", "--help"],
                                  ["apply", "--help"], ["pool", "--help"], ["server", "--help"],
                                  ["server", "status", "--help"]])
def test_light_commands_import_neither_numpy_nor_numba(argv):
    code = (
        "import sys\n"
        "from convfilter.cli import cli\n"
        f"cli.main(args={argv!r}, standalone_mode=False)\n"
        "heavy = sorted(m for m in ('numpy', 'numba', 'PIL', 'scipy', 'h5py') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["kernels"], ["model", "--help"], ["server", "--help"]])
def test_help_and_listings_leave_the_recipe_and_format_tables_unimported(argv):
    """The options of apply, pool, shape and model apply are made when those commands are used:
    building them imports the recipe and format tables, which the listings do not need."""
    code = (
        "import sys\n"
        "from convfilter.cli import cli\n"
        f"cli.main(args={argv!r}, standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('convfilter.'))\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    loaded = eval(done.stderr.rpartition("LOADED ")[2])
    assert not {"convfilter.recipe", "convfilter.formats", "convfilter.geometry"} & set(loaded), loaded
    assert "Usage:" in done.stdout or argv == ["kernels"]


def test_warmup_reports_every_kernel_and_the_time():
    from convfilter import _jit

    done = subprocess.run([sys.executable, "-m", "convfilter", "warmup"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # stdout carries data only
    lines = done.stderr.splitlines()
    reported = {line.split()[1]: line.split()[0] for line in lines[:-1]}
    assert set(reported) == set(_jit.KERNELS)
    assert set(reported.values()) <= {"compiled", "cached"}
    assert lines[-1].startswith("kernels ready in ")
    # a second run finds everything in the cache
    again = subprocess.run([sys.executable, "-m", "convfilter", "warmup"], capture_output=True, text=True,
                           timeout=600)
    assert all(line.startswith("cached") for line in again.stderr.splitlines()[:-1]), again.stderr


def test_warm_up_calls_between_after_each_step_and_an_exception_there_ends_it():
    """The server's stop check: ``between`` runs after each kernel's call; raising there ends the
    warm-up at once, and the backend chosen before is back."""
    from convfilter import ops

    steps, before = [], ops.get_backend()
    ops.warm_up(between=lambda: steps.append(ops.get_backend()))
    assert len(steps) >= 10 and set(steps) == {"numba"}

    def stop():
        steps.append("stop")
        raise SystemExit(0)

    steps.clear()
    with pytest.raises(SystemExit):
        ops.warm_up(between=stop)
    assert steps == ["stop"] and ops.get_backend() == before


def test_read_only_install_without_a_home_still_computes(tmp_path):
    # The copy's __pycache__ is a file and HOME cannot be created, so neither Numba's default
    # cache beside the source nor ~/.cache can be written, even by root.
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "convfilter", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "convfilter" / "__pycache__").write_text("not a folder")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(site), HOME=os.devnull + "/no-home", TMPDIR=str(temp), CONVFILTER_BACKEND="numba")
    code = (
        "import numpy as np, os, convfilter\n"
        "assert convfilter.__file__.startswith(os.environ['PYTHONPATH']), convfilter.__file__\n"
        "x = np.arange(16, dtype=np.float32).reshape(4, 4, 1)\n"
        "print(convfilter.max_pool2d(x, 2)[:, :, 0].tolist())\n"
        "print(os.environ['NUMBA_CACHE_DIR'])\n"
    )
    done = run_python(code, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result, cache_dir = done.stdout.splitlines()
    assert result == "[[5.0, 7.0], [13.0, 15.0]]"
    assert Path(cache_dir).is_relative_to(temp)
    assert any(Path(cache_dir).rglob("*max_pool*.nbi")), "the kernel was not cached in the fallback folder"


def test_kernels_are_cached_per_user_never_inside_the_installed_package(tmp_path):
    # Numba's files inside an installed package are not in pip's record: an uninstall would leave
    # a convfilter/ folder behind that shadows the next (editable) install. The cache goes to XDG.
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "convfilter", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(site), XDG_CACHE_HOME=str(tmp_path / "xdg"), PYTHONDONTWRITEBYTECODE="1",
               CONVFILTER_BACKEND="numba")
    code = (
        "import numpy as np, convfilter\n"
        "print(convfilter.max_pool2d(np.ones((4, 4, 1), np.float32), 2).shape)\n"
    )
    done = run_python(code, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert any((tmp_path / "xdg" / "convfilter" / "numba").rglob("*max_pool*.nbi"))
    leftovers = [p for p in (site / "convfilter").rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert leftovers == []
