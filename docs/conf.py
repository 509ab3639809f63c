"""Sphinx configuration of the pyxbraid documentation (built by scripts/docs.sh).

The API reference is read from the installed package (autodoc imports
``pyxbraid``, the compiled engine included), so build after installing it.
The tables of options, callbacks, phases and status fields are written at build
time into ``docs/_generated/`` by the functions of ``codegen/generate.py``,
from the one declaration in ``src/pyxbraid/_vocabulary.py``: the same text the
README's generated regions hold, and never out of date.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def _load_generator():
    spec = importlib.util.spec_from_file_location("_pyxbraid_codegen", ROOT / "codegen" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _status_fields_table(vocabulary) -> str:
    rows = ["| attribute | type | meaning |", "|---|---|---|"]
    for f in vocabulary.STATUS_FIELDS:
        rows.append(f"| `status.{f.name}` | {f.python_type} | {f.doc} |")
    rows.append("| `status.dt` | float | `tstop - tstart`. |")
    rows.append("| `status.phase` | str | The calling routine (see the phases). |")
    return "\n".join(rows)


def _write_generated() -> None:
    gen = _load_generator()
    tables = {
        "options-table.md": gen.options_table("MGRIT"),
        "adjoint-options-table.md": gen.options_table("adjoint"),
        "virtual-time-options-table.md": gen.options_table("virtual time"),
        "callbacks-table.md": gen.callbacks_table(),
        "phases.md": gen.phases_list(),
        "status-fields.md": _status_fields_table(gen.V),
    }
    out = DOCS / "_generated"
    out.mkdir(exist_ok=True)
    for name, text in tables.items():
        path = out / name
        text = text.rstrip("\n") + "\n"
        if not path.exists() or path.read_text() != text:  # unchanged files keep their time stamps
            path.write_text(text)


_write_generated()

import pyxbraid  # noqa: E402  (the installed package: autodoc documents it)

project = "pyxbraid"
author = "the pyxbraid developers"
copyright = "the pyxbraid developers, BSD-3-Clause"
version = release = pyxbraid.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]

# Markdown pages (MyST): ``{include}`` and ``{eval-rst}`` directives, anchors for
# headings up to level 3 so pages can link to sections.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# API reference: numpydoc renders the docstrings; class pages list their members
# through autodoc, not numpydoc's autosummary tables.
autosummary_generate = False
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc "Parameters" sections carry the types
# pyxbraid.torch needs PyTorch, an optional dependency: without it, autodoc reads
# the module against a stand-in so the reference still builds.
autodoc_mock_imports = [] if importlib.util.find_spec("torch") else ["torch"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False


html_theme = "furo"
html_title = f"pyxbraid {release}"
