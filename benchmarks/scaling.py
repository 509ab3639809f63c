#!/usr/bin/env python
"""Strong scaling predicted by virtual time: P = 1 to 32 ranks run oversubscribed here, plus an analytic model to 1024.

    .venv/bin/python benchmarks/scaling.py                  # the table of benchmarks/README.md (~10 min)
    .venv/bin/python benchmarks/scaling.py --quick          # smaller problems, P <= 8 (~2 min)
    .venv/bin/python benchmarks/scaling.py --ranks 1,2,4,8,16,32,64 --repeats 3 --plot scaling.png

Every run is a solve with ``virtual_time=True`` on P ranks of this 2-core machine:
``result.virtual_wall_time`` is the wall time the same run would take on P
dedicated cores linked by the network model (default: InfiniBand EDR,
``--latency 1.5e-6 --bandwidth 12e9``; see docs/guide/virtual-time.md). The
speedup is against serial stepping on one core (``max_levels=1``,
layer-serial training, plain torch autograd), timed as thread CPU time.

The analytic model continues the curve beyond what can be run here. From the
1-rank MGRIT run it takes the time per step call c = T_1 / S (S step calls,
adjoint steps included), the iterations I, the level sizes N_l and the state
size b, and assumes every level costs the same per point:

    T(P) = c * (W * sum_l max(ceil(N_l / P), cfactor) / sum_l N_l + W_crs)
           + I * a * (sum_l h * k_l(P) * m(b) + (min(P, N_crs) - 1) * m(b) + ceil(log2 P) * m(8))

with the levels l above the coarsest (a rank's share of a level, but at least one
interval, whose F-points are stepped one after the other), W_crs = I * a * N_crs the step calls of
the sequential coarsest solve, W = S - W_crs, a = 2 with an adjoint (1 without),
h = nrelax + 3 neighbour exchanges per level and iteration (relaxation sweeps,
the restriction's F-sweep and value exchange, the interpolation), k_l(P) = 1
while level l has a point per rank and min(cfactor, ceil(P / N_l)) once an
interval's points spread over several ranks, and m(n) = latency + n / bandwidth.
It reproduces T_1 exactly at P = 1 (by construction); the virtual-time runs
check it at P = 2 .. 32.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vt_cases import launch  # noqa: E402

# label -> (worker arguments, quick-mode overrides, largest P run by default)
CASES = {
    "LinearODE 2^20 (full ML, cf2 FCF, 5 it)": (
        ["--case", "linear_ode", "--config", "full", "--log2n", "20"],
        ["--log2n", "16"],
        32,
    ),
    "Heat1D 129 x 2^14 (full ML, cf2 FCF)": (
        ["--case", "heat1d", "--nspace", "129", "--log2n", "14"],
        ["--log2n", "11"],
        32,
    ),
    "peaks ResNet depth 1024 (exact)": (
        ["--case", "resnet", "--config", "exact", "--depth", "1024"],
        ["--depth", "128"],
        32,
    ),
    "peaks ResNet depth 1024 (one-shot, 2 it)": (
        ["--case", "resnet", "--config", "one_shot", "--depth", "1024"],
        ["--depth", "128"],
        32,
    ),
    "torch conv ResNet depth 128 (exact)": (
        ["--case", "torch_conv", "--depth", "128", "--batch", "16"],
        ["--depth", "32"],
        16,
    ),
}
MODEL_RANKS = (64, 128, 256, 512, 1024)


def model(p1: dict, P: int, latency: float, bandwidth: float) -> float:
    """The analytic model's T(P) from the 1-rank record ``p1`` (see the module docstring)."""
    run = p1["run"]
    sizes = run["level_sizes"]
    a = p1["adjoint_factor"] if run["adjoint_steps"] else 1
    it = max(run["iterations"], 1)
    steps = run["steps"] + run["adjoint_steps"]
    c = run["virtual"] / steps
    if len(sizes) == 1:  # sequential marching: a pipeline through the ranks
        m = latency + p1["state_bytes"] / bandwidth
        return c * steps + a * (min(P, sizes[0]) - 1) * m + math.ceil(math.log2(P)) * (latency + 8 / bandwidth)
    fine, coarsest = sizes[:-1], sizes[-1]
    w_crs = it * a * coarsest
    w = max(steps - w_crs, 0)
    cf = p1["cfactor"]
    # A rank's share of a level, but never less than one interval: its F-points are stepped one
    # after the other, on however many ranks they lie.
    share = sum(max(math.ceil(n / P), min(cf, n)) for n in fine)
    compute = c * (w * share / sum(fine) + w_crs)
    if P == 1:
        return compute
    m_state = latency + p1["state_bytes"] / bandwidth
    m_norm = latency + 8 / bandwidth
    h = p1["nrelax"] + 3
    chains = sum(1 if n >= P else min(p1["cfactor"], math.ceil(P / n)) for n in fine)
    comm = it * a * (h * chains * m_state + (min(P, coarsest) - 1) * m_state + math.ceil(math.log2(P)) * m_norm)
    return compute + comm


def run_case(label, case_args, ranks, repeats, latency, bandwidth, verbose):
    net = ["--latency", repr(latency), "--bandwidth", repr(bandwidth)]
    serial = launch(1, [*case_args, "--serial", "--repeats", str(repeats)])["serial"]
    rows = {}
    for P in ranks:
        t = time.time()
        rec = launch(P, [*case_args, *net, "--virtual", "on", "--repeats", str(repeats), "--critical-path"])
        runs = rec["runs"]
        rows[P] = dict(
            virtual=statistics.median(r["virtual"] for r in runs),
            all=[r["virtual"] for r in runs],
            run=runs[0],
            state_bytes=rec["state_bytes"],
            adjoint_factor=rec["adjoint_factor"],
            cfactor=rec["cfactor"],
            nrelax=rec["nrelax"],
            parallelism=rec["total_calls"] / rec["critical_path"] if "critical_path" in rec else None,
        )
        if verbose:
            print(f"#   {label}: P={P} {rows[P]['virtual']:.4f} s ({time.time() - t:.0f} s)", file=sys.stderr)
    p1 = dict(rows[ranks[0]])
    p1["run"] = dict(p1["run"], virtual=rows[ranks[0]]["virtual"])
    return serial, rows, p1


def print_case(label, serial, rows, p1, latency, bandwidth):
    run = p1["run"]
    print(
        f"\n{label}: {run['iterations']} iterations, levels {len(run['level_sizes'])} "
        f"({run['level_sizes'][0]} .. {run['level_sizes'][-1]} points), state {p1['state_bytes']} bytes; "
        f"serial stepping {serial:.4f} s"
    )
    print(
        f"{'P':>5s} {'virtual s':>10s} {'speedup':>8s} {'vs P=1':>7s} {'alg. par.':>9s} {'model s':>10s} "
        f"{'model/virt':>10s} {'model speedup':>13s}"
    )
    t1 = rows[min(rows)]["virtual"]
    for P, r in rows.items():
        mod = model(p1, P, latency, bandwidth)
        par = f"{r['parallelism']:9.2f}" if r["parallelism"] else f"{'-':>9s}"
        print(
            f"{P:5d} {r['virtual']:10.4f} {serial / r['virtual']:8.2f} {t1 / r['virtual']:7.2f} {par} {mod:10.4f} "
            f"{mod / r['virtual']:10.3f} {serial / mod:13.2f}"
        )
    for P in MODEL_RANKS:
        if P > max(rows):
            mod = model(p1, P, latency, bandwidth)
            print(f"{P:5d} {'-':>10s} {'-':>8s} {'-':>7s} {'-':>9s} {mod:10.4f} {'-':>10s} {serial / mod:13.2f}")


def plot(path, results, latency, bandwidth):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(no plot: matplotlib is not installed; {path} not written)")
        return
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for k, (label, (serial, rows, p1)) in enumerate(results.items()):
        color = f"C{k}"
        ps = sorted(rows)
        ax.plot(ps, [serial / rows[p]["virtual"] for p in ps], "o", color=color, label=f"{label} (virtual time)")
        mp = sorted(set(ps) | {p for p in MODEL_RANKS})
        ax.plot(mp, [serial / model(p1, p, latency, bandwidth) for p in mp], "-", color=color, alpha=0.6)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("ranks (one core each)")
    ax.set_ylabel("speedup over serial stepping")
    ax.set_title(
        f"pyxbraid strong scaling: virtual time (dots) and model (lines)\n"
        f"network {latency * 1e6:.1f} us, {bandwidth / 1e9:.0f} GB/s"
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="", help="rank counts (default 1,2,4,8,16,32; torch up to 16)")
    p.add_argument("--repeats", type=int, default=2, help="solves per launch (median)")
    p.add_argument("--latency", type=float, default=1.5e-6, help="seconds per message")
    p.add_argument("--bandwidth", type=float, default=12.0e9, help="bytes per second")
    p.add_argument("--quick", action="store_true", help="smaller problems, P <= 8")
    p.add_argument("--only", default="", help="run the cases whose label contains this text")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--plot", default="", help="write the curves to this image (needs matplotlib)")
    p.add_argument("--json", default="", help="write every raw result to this file")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    started = time.time()
    cases = {k: v for k, v in CASES.items() if args.only in k and not (args.no_torch and "torch" in k)}
    print("=" * 100)
    print("strong scaling by virtual time: P ranks oversubscribed on this machine, predicted for P dedicated cores")
    print(
        f"network model: latency {args.latency:g} s, bandwidth {args.bandwidth:g} B/s; medians of {args.repeats} "
        "solves per launch (after a warm-up)"
    )
    print("speedup = serial stepping on one core (thread CPU time) / virtual time; vs P=1 = MGRIT on 1 rank / P ranks")
    print("alg. par. = step calls / critical path in step calls (virtual_step_cost=1, free network): the algorithm's")
    print(
        "            own parallelism, what vs P=1 would be if every step cost the same and nothing else cost anything"
    )
    print("=" * 100)
    results = {}
    for label, (case_args, quick_args, top) in cases.items():
        if args.ranks:
            ranks = [int(x) for x in args.ranks.split(",")]
        else:
            ranks = [P for P in (1, 2, 4, 8, 16, 32) if P <= (min(top, 8) if args.quick else top)]
        extra = quick_args if args.quick else []
        serial, rows, p1 = run_case(
            label, [*case_args, *extra], ranks, args.repeats, args.latency, args.bandwidth, args.verbose
        )
        results[label] = (serial, rows, p1)
        print_case(label, serial, rows, p1, args.latency, args.bandwidth)
        sys.stdout.flush()
    if args.plot:
        plot(args.plot, results, args.latency, args.bandwidth)
    if args.json:
        Path(args.json).write_text(json.dumps({k: dict(serial=s, rows=r) for k, (s, r, _) in results.items()}))
    print(f"\ntotal {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
