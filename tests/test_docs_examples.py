"""Every ``convfilter`` command shown in the README and the docs pages parses.

The ```sh (and ```console) blocks of README.md and docs/**/*.md are read as a shell would
split them (comments dropped, ``\\`` continuations joined, pipelines split at ``|``), and each
``convfilter ...`` command is parsed by click exactly as the command line parses it: option
names, choices, numbers and kernel specs (``-k`` files are created in a temporary folder), and
``-o`` is checked against the rule for folders and files. The commands are not run: they name
files that exist only on the reader's machine.
"""

import re
import shlex

import click
import numpy as np
import pytest
from conftest import ROOT

from convfilter.cli import cli
from convfilter.outputs import output_kind

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(sh|bash|console|shell|text)\s*\n(.*?)^```", re.S | re.M)


def shell_lines(text: str) -> list[str]:
    """The command lines of the shell blocks of a Markdown text (``$ `` prompts in console/text blocks)."""
    lines = []
    for kind, body in BLOCK.findall(text):
        joined = re.sub(r"\s*\\\n\s*", " ", body)
        for line in joined.splitlines():
            if kind in ("console", "text"):
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            lines.append(line)
    return lines


def convfilter_commands(line: str) -> list[list[str]]:
    """The argument lists of the ``convfilter`` commands in one shell line (several in a pipeline)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    tokens = list(lexer)
    commands, current = [], []
    for token in tokens + ["|"]:
        if token in ("|", "||", "&&", "&", ";"):
            if current and current[0] == "convfilter":
                commands.append(current[1:])
            current = []
        else:
            current.append(token)
    return commands


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for line in shell_lines(page.read_text(encoding="utf-8")):
            found += [(f"{page.relative_to(ROOT)}: {line.strip()}", args) for args in convfilter_commands(line)]
    return found


COMMANDS = documented_commands()


def test_the_pages_show_many_commands():
    # the README alone shows over twenty; an empty list would make the next test pass vacuously
    assert len(COMMANDS) >= 20, [where for where, _ in COMMANDS]


def test_splitting_follows_the_shell():
    assert convfilter_commands("convfilter apply -k 'a;b' x.png -f npy -o - | convfilter pool - # done") == [
        ["apply", "-k", "a;b", "x.png", "-f", "npy", "-o", "-"], ["pool", "-"]]
    assert convfilter_commands("find photos -name '*.jpg' | convfilter apply --from-list -") == [
        ["apply", "--from-list", "-"]]
    assert shell_lines("```sh\nconvfilter shape \\\n  --size 3x3\n```\n```text\n$ convfilter kernels\nout\n```\n") == [
        "convfilter shape --size 3x3", "convfilter kernels"]


@pytest.mark.parametrize("where,args", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(where, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for flag, value in zip(args, args[1:]):  # kernel files the example names
        if flag in ("-k", "--kernel") and value.endswith((".npy", ".txt", ".csv")):
            path = tmp_path / value
            path.parent.mkdir(parents=True, exist_ok=True)
            if value.endswith(".npy"):
                np.save(path, np.ones((3, 3, 3, 2), np.float32))
            else:
                path.write_text("1,0,-1\n2,0,-2\n1,0,-1\n")
    name, *rest = args
    group = click.Context(cli, info_name="convfilter")
    command = cli.get_command(group, name)
    assert command is not None, f"{where}\n  no command '{name}'"
    try:
        with command.make_context(name, rest, parent=group):
            pass
    except click.exceptions.Exit as done:  # --help
        assert done.exit_code == 0, where
    except click.ClickException as exc:
        pytest.fail(f"{where}\n  {exc.format_message()}")
    for flag, value in zip(args, args[1:]):  # and -o follows the rule for folders, files and stdout
        if flag in ("-o", "--output"):
            output_kind(value)
