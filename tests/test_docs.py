"""The documentation holds together: links resolve, no machine-local paths, the README's commands run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# [text](target) and ![alt](target); the target ends at whitespace or ")" (an optional "title" may follow)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
EXTERNAL = ("http://", "https://", "mailto:", "#")
SUBCOMMAND = re.compile(r"^[a-z][a-z0-9-]*$")
USER_DOCS = ["README.md", "CHANGELOG.md", "docs/*.md", "models/*.md"]


def _git_files(*args: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line]


def markdown_files() -> list[Path]:
    """Tracked *.md files, and untracked ones git does not ignore (new files count before their commit)."""
    names = set(_git_files("*.md")) | set(_git_files("--others", "--exclude-standard", "*.md"))
    return sorted(ROOT / name for name in names if (ROOT / name).is_file())


def user_docs() -> list[Path]:
    return sorted({p for pattern in USER_DOCS for p in ROOT.glob(pattern)})


def _without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(md: Path) -> list[str]:
    targets = LINK.findall(_without_code(md.read_text(encoding="utf-8")))
    return [t for t in targets if not t.startswith(EXTERNAL)]


def readme_commands() -> list[tuple[str, ...]]:
    """Every `vibescope <sub> [<sub2>]` in the README's code blocks, as (sub,) or (sub, sub2)."""
    found: list[tuple[str, ...]] = []
    for block in FENCE.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        for line in block.splitlines():
            words = line.strip().removeprefix("$ ").split()
            if not words:
                continue
            if words[0] in ("vibescope", ".venv/bin/vibescope"):
                rest = words[1:]
            elif words[:3] in (["python", "-m", "vibescope"], [".venv/bin/python", "-m", "vibescope"]):
                rest = words[3:]
            else:
                continue
            if not rest or not SUBCOMMAND.match(rest[0]):
                continue
            command = (rest[0],)
            if len(rest) > 1 and SUBCOMMAND.match(rest[1]):
                command += (rest[1],)
            if command not in found:
                found.append(command)
    return found


def test_the_docs_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/protocol.md", "models/separator.md"} <= names


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files_that_exist(md: Path):
    broken = [t for t in relative_links(md) if not (md.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{md.relative_to(ROOT)}: broken links {broken}"


def test_link_check_sees_links_and_images(tmp_path: Path):
    md = tmp_path / "x.md"
    md.write_text(
        '[a](docs/a.md) ![b](img/b.png "title") [c](https://example.org) [d](#here) [e](f.md#part)\n'
        "`[not](inline.md)`\n```\n[not](fenced.md)\n```\n"
    )
    assert relative_links(md) == ["docs/a.md", "img/b.png", "f.md#part"]


@pytest.mark.parametrize("md", user_docs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_user_docs_name_no_tmp_paths(md: Path):
    hits = [n for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1) if "/tmp/" in line]
    assert not hits, f"{md.relative_to(ROOT)}: /tmp/ paths on lines {hits}"


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_refer_to_nothing_outside_the_repository(md: Path):
    assert "../shared" not in md.read_text(encoding="utf-8"), f"{md.relative_to(ROOT)} names ../shared"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines"


def test_readme_shows_the_everyday_commands():
    assert {("serve",), ("push",), ("analyze",), ("selfcheck",)} <= set(readme_commands())


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_readme_command_has_a_working_help(command: tuple[str, ...]):
    done = subprocess.run(
        [sys.executable, "-m", "vibescope", *command, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"vibescope {' '.join(command)} --help: {done.stderr[-2000:]}"
    assert "usage: vibescope" in done.stdout
