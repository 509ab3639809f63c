#!/usr/bin/env bash
# Run the pyxbraid test suite: bash scripts/test.sh [pytest args...]
#
# Creates .venv and installs ".[mpich,test]" into it when .venv is missing or
# pyxbraid is not importable from it; reinstalls (in the same mode: wheel or
# editable from scripts/dev-install.sh) when sources changed since the last
# install. Then runs `.venv/bin/python -m pytest "$@"`.
# Environment: PYTHON (default python3), PYXBRAID_REINSTALL=1 forces a reinstall.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv
STAMP="$VENV/.pyxbraid-install"   # contains the install mode: wheel | editable

install_wheel() {
    echo "scripts/test.sh: installing .[mpich,test] into $VENV" >&2
    "$VENV/bin/python" -m pip install --progress-bar off ".[mpich,test]"
    echo wheel > "$STAMP"
}

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "scripts/test.sh: creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
    install_wheel
elif ! "$VENV/bin/python" -c "import pyxbraid" >/dev/null 2>&1; then
    install_wheel
elif [[ "${PYXBRAID_REINSTALL:-0}" == 1 || ! -f "$STAMP" ]] \
    || [[ -n "$(find src CMakeLists.txt pyproject.toml -newer "$STAMP" -type f \
                 -not -path '*/__pycache__/*' -print -quit 2>/dev/null)" ]]; then
    if [[ "$(cat "$STAMP" 2>/dev/null)" == editable ]]; then
        echo "scripts/test.sh: sources changed; rebuilding the editable install" >&2
        bash scripts/dev-install.sh
    else
        echo "scripts/test.sh: sources changed since the last install; reinstalling" >&2
        install_wheel
    fi
fi

exec "$VENV/bin/python" -m pytest "$@"
