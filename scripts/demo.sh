#!/usr/bin/env bash
# Main demo: layer-parallel training of the paper's ResNet on the built-in
# peaks data, on 2 MPI ranks (python -m pyxbraid.train peaks), then the same
# network trained layer-serially on 1 rank for comparison:
#   bash scripts/demo.sh [pyxbraid-train args...]   (NP=4 bash scripts/demo.sh for 4 ranks)
# Prints progress, accuracies and both training times; writes
# pyxbraid-peaks/{training,decision_regions}.png, pyxbraid-peaks/model.npz,
# pyxbraid-peaks/metrics.json and pyxbraid-peaks/serial/metrics.json.
# Be warned (the comparison at the end says it too): for this small network,
# layer-parallel training is much SLOWER than layer-serial training; MGRIT pays
# off only for deep networks on many ranks (benchmarks/README.md).
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

NP="${NP:-2}"
OUT=pyxbraid-peaks
"$VENV/bin/mpiexec" -n "$NP" "$VENV/bin/python" -m mpi4py -m pyxbraid.train peaks \
    --metrics "$OUT/metrics.json" "$@"

echo
echo "scripts/demo.sh: the same network, layer-serial (plain forward/backpropagation) on 1 rank:"
"$VENV/bin/python" -m pyxbraid.train peaks "$@" --mode serial --no-plots --no-progress \
    --out "$OUT/serial" --metrics "$OUT/serial/metrics.json"

"$VENV/bin/python" - "$OUT/metrics.json" "$OUT/serial/metrics.json" <<'EOF'
import json, sys

par, ser = (json.load(open(p)) for p in sys.argv[1:3])
tp, ts = par["wall_seconds"], ser["wall_seconds"]
mode = {"parallel": "layer-parallel (exact MGRIT)", "one-shot": "layer-parallel (one-shot)",
        "serial": "layer-serial"}[par["settings"]["mode"]]
print("\nComparison (training time, same network and data; validation accuracy):")
label = f"{mode} on {par['ranks']} rank(s)"
print(f"  {label:<42} {tp:7.2f} s  ({par['validation_accuracy']:.1%})")
print(f"  {'layer-serial on 1 rank':<42} {ts:7.2f} s  ({ser['validation_accuracy']:.1%})")
if tp > ts:
    print(f"  -> here layer-parallel training is {tp / ts:.1f}x SLOWER than layer-serial training.")
else:
    print(f"  -> here layer-parallel training is {ts / tp:.1f}x faster than layer-serial training.")
print("""  Why: MGRIT repeats the forward and backward sweeps over a hierarchy of layer grids (7-8
  iterations in exact mode, 2 in one-shot), about 18-27x (exact) and 5-9x (one-shot) the work
  of one backpropagation; that work is split over the ranks, the coarsest grid is not. It pays
  off only for deep networks on many ranks. The speedup model of benchmarks/README.md predicts,
  on 64 ranks against layer-serial training (per step, batch 100):
    depth  32, width  8 (this network's size): exact 0.33x, one-shot 1.1x
    depth 128, width 32:                       exact 1.6x,  one-shot 5.5x
    depth 512, width 32:                       exact 2.0x,  one-shot 6.1x""")
EOF
