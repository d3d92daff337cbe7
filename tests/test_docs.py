"""The documentation builds and holds together.

- `make docs` (pdoc) builds the API reference from the docstrings without one warning;
  the test runs pdoc on the Makefile's own module list, in a subprocess, into a temporary
  folder.
- Every public package is in that list, so a new one cannot go undocumented.
- The ```python blocks of docs/*.md compile, and the ones marked `<!-- runnable -->` run
  (README.md's are tests/test_readme.py's).
- Relative links of README.md and docs/*.md point at files that exist, and links to a
  heading (`#anchor`) find it.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAKEFILE = ROOT / "Makefile"
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
RUN_TIMEOUT = 60.0

# Top-level modules that are not public API (and so not in the reference).
INTERNAL_MODULES = {"log", "version", "__main__", "__init__"}


def api_modules() -> list[str]:
    """API_MODULES of the Makefile (continuation lines joined)."""
    text = MAKEFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^API_MODULES\s*:=\s*(.+)$", text, re.MULTILINE)
    assert match, "the Makefile has no API_MODULES"
    return match.group(1).split()


def test_every_public_package_is_in_the_reference() -> None:
    package = ROOT / "packetron"
    public = {"packetron"}
    for path in package.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            public.add(f"packetron.{path.name}")
        elif path.suffix == ".py" and path.stem not in INTERNAL_MODULES:
            public.add(f"packetron.{path.stem}")
    assert public - set(api_modules()) == set()


@pytest.mark.timeout(180)
def test_api_reference_builds_without_warnings(tmp_path: pathlib.Path) -> None:
    if importlib.util.find_spec("pdoc") is None:
        pytest.skip("pdoc is not installed: pip install -e '.[docs]' (the test extra has it)")
    modules = api_modules()
    result = subprocess.run(
        [sys.executable, "-W", "always", "-m", "pdoc", "--docformat", "google",
         "--output-directory", str(tmp_path), *modules],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"pdoc warned:\n{result.stderr}"
    assert (tmp_path / "index.html").exists()
    for module in modules:
        page = tmp_path / (module.replace(".", "/") + ".html")
        assert page.exists(), f"no page for {module}"
    # The docstrings made it: the server's constructor documents its arguments.
    assert "ephemeral" in (tmp_path / "packetron" / "server.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------- examples in docs/

_FENCE = re.compile(r"^```python\s*$")
_MARKER = re.compile(r"^<!--\s*runnable\s*-->\s*$")


def _blocks(path: pathlib.Path) -> list[tuple[str, str, bool]]:
    """(id, source, runnable) of every ```python block of a page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if not _FENCE.match(lines[index]):
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{path.name}:{index + 1}: unterminated ```python block"
        runnable = index > 0 and _MARKER.match(lines[index - 1]) is not None
        # Padded so that tracebacks give the page's own line numbers.
        source = "\n" * (index + 1) + "\n".join(lines[index + 1:end]) + "\n"
        blocks.append((f"{path.relative_to(ROOT)}:{index + 1}", source, runnable))
        index = end + 1
    return blocks


DOC_BLOCKS = [block for page in sorted(DOCS.glob("*.md")) for block in _blocks(page)]
RUNNABLE = [block for block in DOC_BLOCKS if block[2]]


def test_docs_have_examples() -> None:
    assert len(DOC_BLOCKS) >= 5 and RUNNABLE


@pytest.mark.parametrize("block", DOC_BLOCKS, ids=[block[0] for block in DOC_BLOCKS])
def test_doc_block_compiles(block: tuple[str, str, bool]) -> None:
    compile(block[1], block[0], "exec", dont_inherit=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", RUNNABLE, ids=[block[0] for block in RUNNABLE])
def test_doc_block_runs(block: tuple[str, str, bool], tmp_path: pathlib.Path) -> None:
    # Relative paths in the examples (examples/handlers) resolve as in a checkout.
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    script = tmp_path / "example.py"
    script.write_text(block[1], encoding="utf-8")
    try:
        result = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path,
                                capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block[0]} still running after {RUN_TIMEOUT} s:\n{exc.stderr}")
    assert result.returncode == 0, f"{block[0]} failed:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------- links

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|\*", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        match = None if in_code else _HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(1))
            seen = counts.get(anchor, 0)
            counts[anchor] = seen + 1
            found.add(anchor if seen == 0 else f"{anchor}-{seen}")
    return found


def _links(path: pathlib.Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)  # placeholders, not links yet
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return _LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_resolve(page: pathlib.Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        missing_anchor = bool(anchor) and linked.suffix == ".md" and (
            not linked.exists() or anchor not in anchors(linked))
        if not linked.exists() or missing_anchor:
            broken.append(target)
    assert broken == [], f"{page.name}: broken links {broken}"


def test_readme_contents_lists_every_guide_section() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sections = re.findall(r"^###\s+(.+)$", text.split("## The HTTP guide", 1)[1]
                          .split("\n## ", 1)[0], re.MULTILINE)
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    missing = [s for s in sections if f"(#{github_anchor(s)})" not in contents]
    assert missing == []
