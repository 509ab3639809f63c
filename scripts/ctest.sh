#!/usr/bin/env bash
# The C++ test driver (the engine used from C++ alone, no Python): bash scripts/ctest.sh
# Configures build/ctest with the MPI of .venv (pip's mpich), builds the engine
# library and the driver, and runs ctest (XBraid's ex-01 on 1 and 2 ranks).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
export MPICC="${MPICC:-$PWD/.venv/bin/mpicc}"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B build/ctest "${generator[@]}" -DPYXBRAID_BUILD_TESTS=ON -DPYXBRAID_PYTHON_MODULE=OFF \
    -DPython_EXECUTABLE="$PWD/$PY" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    -DMPIEXEC_EXECUTABLE="$(dirname "$MPICC")/mpiexec" >/dev/null
cmake --build build/ctest -j 2
(cd build/ctest && ctest --output-on-failure)
