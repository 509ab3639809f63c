#!/usr/bin/env bash
# Main demo: layer-parallel training of the paper's ResNet on the built-in
# peaks data, on 2 MPI ranks (python -m pyxbraid.train peaks):
#   bash scripts/demo.sh [pyxbraid-train args...]   (NP=4 bash scripts/demo.sh for 4 ranks)
# Prints progress and accuracies; writes pyxbraid-peaks/{training,decision_regions}.png,
# pyxbraid-peaks/model.npz and pyxbraid-peaks/metrics.json.
# Creates .venv and installs ".[mpich,test]" when .venv is missing or pyxbraid
# is not importable from it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "scripts/demo.sh: creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import pyxbraid" >/dev/null 2>&1; then
    echo "scripts/demo.sh: installing .[mpich,test] into $VENV" >&2
    "$VENV/bin/python" -m pip install --progress-bar off ".[mpich,test]"
    echo wheel > "$VENV/.pyxbraid-install"
fi

exec "$VENV/bin/mpiexec" -n "${NP:-2}" "$VENV/bin/python" -m mpi4py -m pyxbraid.train peaks \
    --metrics pyxbraid-peaks/metrics.json "$@"
