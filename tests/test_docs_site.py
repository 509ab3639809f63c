"""The documentation stays true: its examples run, the files it names exist, the code it
quotes is in the source, and the Sphinx site builds with warnings as errors.

- Every ```pycon block of a page is a doctest (the blocks of one page share a namespace).
- Every repository path a page names in backquotes exists.
- Every line of the C++ and Python blocks of CONTRIBUTING.md occurs in the source tree.
- ``sphinx-build -W`` succeeds (skipped when Sphinx and the docs extra are not installed;
  ``bash scripts/docs.sh`` installs them).
"""

from __future__ import annotations

import doctest
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if not {"_build", "_generated"} & set(p.relative_to(DOCS).parts))
NAMING_PAGES = [ROOT / "CONTRIBUTING.md", ROOT / "tests" / "data" / "expected_numbers.md", *PAGES]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "pycon")], ids=page_id)
def test_page_examples_run_and_print_what_the_page_shows(page):
    text = "\n".join(blocks(page, "pycon"))
    test = doctest.DocTestParser().get_doctest(text, {"__name__": "__docs__"}, page.name, str(page), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} example(s) of {page_id(page)} failed"


def _named_paths(text: str) -> set[str]:
    """Repository paths in backquotes: `src/...`, `tests/...`, and engine file names like `cycle.cpp`."""
    names = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.rstrip(".,;:)")
        if "<" in token or "*" in token or token.startswith(("http", "-")):
            continue
        braces = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", token)
        expanded = [braces[1] + part + braces[3] for part in braces[2].split(",")] if braces else [token]
        for name in expanded:
            if name.endswith((".c", ".h")):
                continue  # XBraid's sources (examples/ex-01.c, braid/drive.c), not this repository's
            if re.fullmatch(r"(src|tests|codegen|scripts|examples|benchmarks|docs)/[\w./-]+", name):
                names.add(name)
            elif re.fullmatch(r"[\w-]+\.(cpp|hpp)", name):
                names.add(name)
    return names


@pytest.mark.parametrize("page", NAMING_PAGES, ids=page_id)
def test_files_a_page_names_exist(page):
    cpp = [ROOT / "src" / "cpp" / d for d in ("core", "bindings", "apps")]
    missing = []
    for name in sorted(_named_paths(page.read_text())):
        if "/" in name:
            ok = (ROOT / name).exists() or name.startswith("docs/_")
        else:
            ok = any((d / name).exists() for d in cpp)
        if not ok:
            missing.append(name)
    assert missing == [], f"{page_id(page)} names files that do not exist: {missing} (update the page)"


def test_code_quoted_in_contributing_is_in_the_source():
    source_lines = set()
    for path in (ROOT / "src").rglob("*"):
        if path.suffix in (".py", ".cpp", ".hpp") and "__pycache__" not in path.parts:
            source_lines.update(line.strip() for line in path.read_text().splitlines())
    contributing = ROOT / "CONTRIBUTING.md"
    quoted = [
        line.strip()
        for lang in ("cpp", "python")
        for body in blocks(contributing, lang)
        for line in body.splitlines()
        if line.strip()
    ]
    assert quoted, "CONTRIBUTING.md quotes no code"
    stale = [line for line in quoted if line not in source_lines]
    assert stale == [], f"CONTRIBUTING.md quotes lines that are not in src/ (update the recipe): {stale}"


def test_docs_build_with_warnings_as_errors(tmp_path):
    if not all(importlib.util.find_spec(m) for m in ("sphinx", "numpydoc", "myst_parser", "furo")):
        pytest.skip("the docs extra is not installed (bash scripts/docs.sh installs it)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "html" / "api" / "solver.html").exists()
