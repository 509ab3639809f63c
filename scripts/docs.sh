#!/usr/bin/env bash
# Build the documentation (Sphinx, warnings are errors): bash scripts/docs.sh [sphinx-build args...]
#
# The API reference is read from the installed package (autodoc imports the
# compiled engine), so this script first makes sure .venv has pyxbraid, the
# same way scripts/test.sh does: it creates .venv and installs ".[mpich]" when
# pyxbraid is missing, and reinstalls (wheel or editable, as installed) when
# sources changed since the last install. Then it installs the "docs" extra of
# pyproject.toml when one of its packages is missing, and runs
#   sphinx-build -W --keep-going -b html docs docs/_build/html
# Output: docs/_build/html/index.html. Environment: PYTHON (default python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv
PY="$VENV/bin/python"
STAMP="$VENV/.pyxbraid-install"   # the install mode, as scripts/test.sh writes it: wheel | editable

install_wheel() {
    echo "scripts/docs.sh: installing .[mpich] into $VENV" >&2
    "$PY" -m pip install --progress-bar off ".[mpich]"
    echo wheel > "$STAMP"
}

if [[ ! -x "$PY" ]]; then
    echo "scripts/docs.sh: creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$PY" -c "import pyxbraid" >/dev/null 2>&1; then
    install_wheel
elif [[ ! -f "$STAMP" ]] \
    || [[ -n "$(find src CMakeLists.txt pyproject.toml -newer "$STAMP" -type f \
                 -not -path '*/__pycache__/*' -print -quit 2>/dev/null)" ]]; then
    if [[ "$(cat "$STAMP" 2>/dev/null)" == editable ]]; then
        echo "scripts/docs.sh: sources changed; rebuilding the editable install" >&2
        bash scripts/dev-install.sh
    else
        echo "scripts/docs.sh: sources changed since the last install; reinstalling" >&2
        install_wheel
    fi
fi

# The docs extra, read from pyproject.toml (one list of the documentation's packages).
mapfile -t docs_requirements < <("$PY" - <<'EOF'
import re
text = open("pyproject.toml", encoding="utf-8").read()
try:
    import tomllib
    reqs = tomllib.loads(text)["project"]["optional-dependencies"]["docs"]
except ModuleNotFoundError:  # Python 3.10: no tomllib; the extra is one line
    reqs = re.findall(r'"([^"]+)"', re.search(r"^docs = \[(.*)\]$", text, re.M).group(1))
print("\n".join(reqs))
EOF
)
if ! "$PY" -c "import sphinx, numpydoc, myst_parser, furo" >/dev/null 2>&1; then
    echo "scripts/docs.sh: installing the docs extra: ${docs_requirements[*]}" >&2
    "$PY" -m pip install --progress-bar off "${docs_requirements[@]}"
fi

TIMEFORMAT='scripts/docs.sh: sphinx-build took %1R s'
time "$PY" -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
echo "scripts/docs.sh: open docs/_build/html/index.html"
