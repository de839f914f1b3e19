"""The docs stay true to the code: the CLI reference is the real --help, every page is in the site,
and the shell completion they describe works."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import CHECKOUT_ENV, ROOT, cli_reference

REGENERATE = "python docs/cli_reference.py"


def test_the_cli_reference_is_the_current_help():
    page = cli_reference.PAGE.read_text(encoding="utf-8")
    assert page == cli_reference.render(), f"docs/reference.md is stale; regenerate it with: {REGENERATE}"


def test_every_command_has_a_section_in_the_reference():
    page = cli_reference.PAGE.read_text(encoding="utf-8")
    for path in cli_reference.command_paths():
        assert f"## {' '.join(('convfilter', *path))}\n" in page


def test_every_docs_page_is_in_the_site_navigation_and_every_entry_exists():
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(nav) == pages


def completions(words: str) -> list[str]:
    """What click's bash completion offers for the last of ``words`` (as the shell would ask)."""
    env = {**CHECKOUT_ENV, "_CONVFILTER_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    done = subprocess.run([sys.executable, "-m", "convfilter"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines()]  # "plain,VALUE" lines


def test_shell_completion_completes_commands_options_and_choices():
    assert completions("convfilter ap") == ["apply"]
    assert "--pool-stride" in completions("convfilter apply --pool")
    assert completions("convfilter pool --type global") == ["global-max", "global-avg"]
    assert completions("convfilter apply -k sobel") == ["sobel-x", "sobel-y"]


def test_shell_completion_script_is_printed_for_bash_zsh_and_fish():
    for shell in ("bash", "zsh", "fish"):
        env = {**CHECKOUT_ENV, "_CONVFILTER_COMPLETE": f"{shell}_source"}
        done = subprocess.run([sys.executable, "-m", "convfilter"], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 and "_CONVFILTER_COMPLETE" in done.stdout, (shell, done.stderr)
