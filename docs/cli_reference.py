"""Write docs/reference.md, the CLI reference, from the real ``--help`` of every command.

Run it after changing a help text (tests/test_docs.py fails while the page is stale)::

    python docs/cli_reference.py

Commands are found by walking the ``convfilter`` group (sub-groups included), so a new command
appears here, and in the test that runs every ``--help``, without being listed anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

PAGE = Path(__file__).resolve().parent / "reference.md"
WIDTH = 100  # the help's line width, whatever the terminal: the page must not depend on it
INTRO = """\
# CLI reference

The `--help` of every command, as the commands print it. This page is generated: after changing a
help text, run `python docs/cli_reference.py` (a test fails while the page is stale).
"""


def command_paths(group: click.Group | None = None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The words after ``convfilter`` that name every command and sub-group, the top group first."""
    if group is None:
        from convfilter.cli import cli

        group = cli
    paths = [prefix]
    for name in sorted(group.list_commands(click.Context(group))):
        command = group.get_command(click.Context(group), name)
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def help_text(path: tuple[str, ...]) -> str:
    """What ``convfilter PATH --help`` prints, wrapped at :data:`WIDTH` columns."""
    from convfilter.cli import cli

    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="convfilter", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"convfilter {' '.join(path)} --help failed: {result.output}")
    return result.output


def render() -> str:
    """The whole reference page."""
    sections = [INTRO]
    for path in command_paths():
        title = " ".join(("convfilter", *path))
        sections.append(f"## {title}\n\n```text\n{help_text(path).rstrip()}\n```\n")
    return "\n".join(sections)


def main() -> None:
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
