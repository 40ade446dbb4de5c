"""The front page and the manual stay honest: every relative link and ``#anchor`` in README.md and docs/*.md
resolves, and every ``python -m X`` and console script they name answers ``--help``."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plaque.eval.readme import FIGURES, FIGURES_TO

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
MODULE = re.compile(r"\bpython3? -m ([A-Za-z_][\w.]*)")
SCRIPT = re.compile(r"(?:^|`)\s*(plaque-[a-z]+)\b", re.MULTILINE)  # a command at a line's or a code span's start


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (where links and headings are not)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as shown, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text.replace("`", ""))
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of ``page``, repeated headings numbered as GitHub does (``x``, ``x-1``, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(pages: list[Path], root: Path = ROOT) -> list[str]:
    """``page: target (problem)`` for each relative link or anchor in ``pages`` that does not resolve."""
    problems = []
    for page in pages:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...: not checked here
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                # the README's pictures are written by `make readme` once the evaluate stage has drawn them
                if not (page.name == "README.md" and file in {(root / FIGURES_TO / f).resolve() for f in FIGURES}):
                    problems.append(f"{page.relative_to(root)}: {target} (no such file)")
                continue
            if anchor and file.suffix == ".md" and anchor not in anchors(file):
                problems.append(f"{page.relative_to(root)}: {target} (no heading #{anchor} in {file.name})")
    return problems


def commands(pages: list[Path]) -> tuple[set[str], set[str]]:
    """The modules named as ``python -m X`` and the console scripts named as commands in ``pages``."""
    texts = [page.read_text() for page in pages]
    return {m for t in texts for m in MODULE.findall(t)}, {s for t in texts for s in SCRIPT.findall(t)}


def test_slug_follows_github() -> None:
    assert slug("Stage-1: the contrastive VQ prior") == "stage-1-the-contrastive-vq-prior"
    assert slug("The demo's optimiser schedule") == "the-demos-optimiser-schedule"
    assert slug("Setting up, and the `make` targets") == "setting-up-and-the-make-targets"
    assert slug("On one NVIDIA H200") == "on-one-nvidia-h200"


def test_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n## Part two\n\n## Part two\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#part-two-1) [ok](#b) [web](https://example.org/x) `[code](nope.md)`\n\n# B\n\n"
        "[gone](nope.md) [bad anchor](a.md#part-three)\n\n```\n[in a fence](nope2.md)\n```\n"
    )
    assert broken_links([page], root=tmp_path) == [
        "b.md: nope.md (no such file)",
        "b.md: a.md#part-three (no heading #part-three in a.md)",
    ]


def test_every_relative_link_and_anchor_resolves() -> None:
    assert (ROOT / "docs").is_dir() and len(PAGES) > 1
    assert broken_links(PAGES) == []


def test_the_readme_shows_the_figures_make_readme_copies() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [f for f in FIGURES if f"]({(FIGURES_TO / f).as_posix()})" not in readme] == []


def test_every_page_in_docs_is_linked_from_the_readme() -> None:
    readme = prose((ROOT / "README.md").read_text())
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in readme] == []


def test_every_console_script_named_is_declared_and_every_declared_one_is_documented() -> None:
    _, scripts = commands(PAGES)
    assert scripts - set(SCRIPTS) == set(), "named in the docs but not in pyproject.toml [project.scripts]"
    assert set(SCRIPTS) - scripts == set(), "declared in pyproject.toml but named nowhere in README.md or docs/"


def _help(command: list[str]) -> tuple[str, int, str]:
    done = subprocess.run([*command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return " ".join(command), done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_every_command_named_answers_help() -> None:
    """Each ``python -m X`` and console script the pages name exits 0 on ``--help``; the console scripts (and so
    their ``python -m`` forms) show an example."""
    modules, scripts = commands(PAGES)
    bin_dir = Path(sys.executable).parent
    missing = [s for s in sorted(scripts) if not (bin_dir / s).exists()]
    assert missing == [], f"not installed (pip install -e '.[dev]' after changing pyproject.toml): {missing}"
    runs = [[sys.executable, "-m", m] for m in sorted(modules)] + [[str(bin_dir / s)] for s in sorted(scripts)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_help, runs))
    failed = [f"{name}: exit {code}: {out.strip().splitlines()[-1:]}" for name, code, out in results if code != 0]
    assert failed == []
    no_example = [name for name, _, out in results if Path(name).name in SCRIPTS and "example" not in out]
    assert no_example == []
