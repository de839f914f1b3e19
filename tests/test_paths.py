"""Awkward paths: spaces, unicode, leading dashes, symlinks; inputs are never changed."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_convfilter


def convfilter(*args, cwd):
    return run_convfilter(*args, cwd=cwd)


@pytest.fixture
def folder(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    for name in ("my photo.png", "фото 日本.png", "-dash.png", "--double.png", "plain.png"):
        Image.fromarray(pixels).save(tmp_path / name)
    return tmp_path


def expected_map(folder):
    result = convfilter("apply", "-k", "vertical", "plain.png", "-o", "reference.png", cwd=folder)
    assert result.returncode == 0, result.stderr
    return (folder / "reference.png").read_bytes()


def test_spaces_unicode_and_leading_dashes(folder):
    reference = expected_map(folder)
    names = ["my photo.png", "фото 日本.png", "-dash.png", "--double.png"]
    before = {n: (folder / n).read_bytes() for n in names}
    result = convfilter("apply", "-k", "vertical", "-o", "out dir/", "--", *names, cwd=folder)
    assert result.returncode == 0, result.stderr
    for name in names:
        output = folder / "out dir" / f"{name[:-4]}_vertical.png"
        assert output.read_bytes() == reference, name
        assert (folder / name).read_bytes() == before[name]
    # without '--' a leading dash is an option: a usage error, nothing written
    result = convfilter("apply", "-k", "vertical", "-dash.png", "-o", "other/", cwd=folder)
    assert result.returncode == 2 and "Error: " in result.stderr
    assert not (folder / "other").exists()


def test_unicode_name_in_error_lines(folder):
    (folder / "сломано 破損.png").write_bytes(b"not an image")
    result = convfilter("apply", "-v", "-k", "vertical", "--", "сломано 破損.png", "-dash.png", cwd=folder)
    assert result.returncode == 1
    *lines, summary = result.stderr.splitlines()  # workers finish in any order
    assert sorted(lines) == [
        "Error: сломано 破損.png: not an image Pillow can read (unknown format)",
        "wrote -dash_vertical.png",
    ]
    assert summary == "processed 1, failed 1, skipped 0"


def test_symlinked_input_and_output_folder(folder):
    reference = expected_map(folder)
    os.symlink("plain.png", folder / "link.png")
    (folder / "real").mkdir()
    os.symlink("real", folder / "outlink")
    result = convfilter("apply", "-k", "vertical", "link.png", "-o", "outlink/", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "real" / "link_vertical.png").read_bytes() == reference  # named after the link
    assert os.path.islink(folder / "link.png") and os.path.islink(folder / "outlink")


def test_an_output_that_is_a_symlink_to_the_input_is_refused(folder):
    before = (folder / "plain.png").read_bytes()
    os.symlink("plain.png", folder / "alias.png")
    result = convfilter("apply", "-k", "vertical", "plain.png", "-o", "alias.png", cwd=folder)
    assert result.returncode == 1
    # -o names one file, so --name would not help
    assert result.stderr == "Error: plain.png: the output 'alias.png' would overwrite an input; choose another -o\n"
    assert (folder / "plain.png").read_bytes() == before and os.path.islink(folder / "alias.png")


def test_dangling_symlink_is_a_clean_error(folder):
    os.symlink("missing.png", folder / "dangling.png")
    result = convfilter("apply", "-v", "-k", "vertical", "dangling.png", "plain.png", "-o", "out/", cwd=folder)
    assert result.returncode == 1
    *lines, summary = result.stderr.splitlines()  # workers finish in any order
    assert sorted(lines) == ["Error: dangling.png: no such file",
                             f"wrote {os.path.join('out', 'plain_vertical.png')}"]
    assert summary == "processed 1, failed 1, skipped 0"
    assert os.listdir(folder / "out") == ["plain_vertical.png"]


def test_a_symlinked_sub_folder_of_the_output_folder_cannot_lead_outside(folder):
    """--name sub-folders and mirrored -r sub-folders that are links out of -o are refused, nothing written."""
    (folder / "outside").mkdir()
    (folder / "out").mkdir()
    os.symlink(folder / "outside", folder / "out" / "maps")  # absolute target
    (folder / "tree" / "deep").mkdir(parents=True)
    (folder / "tree" / "deep" / "x.png").write_bytes((folder / "plain.png").read_bytes())
    os.symlink("../outside", folder / "out" / "deep")  # relative target, named like the input's sub-folder
    runs = [  # (arguments, the input refused, its output)
        (["plain.png", "--name", "maps/{stem}.{ext}"], "plain.png", "out/maps/plain.png"),
        (["-r", "tree"], "tree/deep/x.png", "out/deep/x_vertical.png"),
    ]
    for arguments, source, refused in runs:
        result = convfilter("apply", "-k", "vertical", *arguments, "-o", "out/", cwd=folder)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"Error: {source}: the output '{refused}' would be written outside "
                                        "the output folder"), result.stderr
        assert "Traceback" not in result.stderr
        assert os.listdir(folder / "outside") == []
    # a link to a folder inside the output folder, and the output folder itself a link, are fine
    os.symlink("maps2", folder / "out" / "inner")
    (folder / "out" / "maps2").mkdir()
    os.symlink("out", folder / "outlink")
    result = convfilter("apply", "-k", "vertical", "plain.png", "--name", "inner/{stem}.{ext}", "-o", "outlink/",
                        cwd=folder)
    assert result.returncode == 0, result.stderr
    assert os.listdir(folder / "out" / "maps2") == ["plain.png"]


def test_the_writer_checks_again_for_a_link_made_after_planning(folder):
    """A sub-folder link that appears between planning and writing is caught where the file is written."""
    from convfilter import outputs
    from convfilter.kernels import resolve
    from convfilter.recipe import Convolution, Recipe

    recipe = Recipe(Convolution(kernels=(resolve("vertical"),)))
    out = folder / "out"
    plan = outputs.OutputPlan.make(recipe, [str(folder / "plain.png")], f"{out}/", None, None, "late/{stem}.{ext}")
    assert plan.outputs_for(recipe, str(folder / "plain.png")) == [str(out / "late" / "plain.png")]
    (folder / "outside").mkdir()
    out.mkdir()
    os.symlink(folder / "outside", out / "late")
    with pytest.raises(ValueError, match="would be written outside the output folder"):
        outputs.process(str(folder / "plain.png"), recipe, plan)
    assert os.listdir(folder / "outside") == []
