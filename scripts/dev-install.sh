#!/usr/bin/env bash
# Fast developer loop: editable install without build isolation and with a
# persistent CMake build directory (build/<wheel_tag>), so re-running this
# script after editing C++ only recompiles what changed.
#   bash scripts/dev-install.sh          # first time ~30 s, afterwards a few s
# Python files under src/pyxbraid are live (no reinstall needed); re-run this
# after any C++/CMake change. Do not use scikit-build-core's editable.rebuild
# under mpiexec (ranks race in one build dir).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv
PIP=("$VENV/bin/python" -m pip install --progress-bar off)

if [[ ! -x "$VENV/bin/python" ]]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi

# Build requirements (pyproject [build-system].requires + tool.scikit-build
# build.requires), installed into the venv because isolation is off.
if ! "$VENV/bin/python" -c "import scikit_build_core, pybind11, mpi4py, numpy, importlib.metadata as m; m.distribution('mpich')" >/dev/null 2>&1 \
    || [[ "${PYXBRAID_UPGRADE_BUILD_DEPS:-0}" == 1 ]]; then
    "${PIP[@]}" "scikit-build-core>=0.11" "pybind11>=3" "mpi4py>=4.1" "numpy>=2" mpich
fi
# cmake and ninja: use the ones on PATH if any, else install them into the venv.
extra=()
command -v cmake >/dev/null 2>&1 || [[ -x "$VENV/bin/cmake" ]] || extra+=("cmake>=3.18")
command -v ninja >/dev/null 2>&1 || [[ -x "$VENV/bin/ninja" ]] || extra+=(ninja)
if ((${#extra[@]})); then "${PIP[@]}" "${extra[@]}"; fi

TIMEFORMAT='scripts/dev-install.sh: build+install took %1R s'
# Development builds carry the benchmark hooks (benchmarks/bench_engine.py's "bare" column).
time "${PIP[@]}" --no-build-isolation -Cbuild-dir="build/{wheel_tag}" -Ccmake.define.PYXBRAID_BENCH_HOOKS=ON \
    -e ".[mpich,test]"
echo editable > "$VENV/.pyxbraid-install"
