#!/usr/bin/env python
"""Check the virtual-time model where it can be checked: predicted against measured wall time on 1 and 2 ranks.

    .venv/bin/python benchmarks/bench_virtual_time.py               # the table of benchmarks/README.md (~5 min)
    .venv/bin/python benchmarks/bench_virtual_time.py --quick       # smaller problems, 2 repeats (~1 min)

This machine has 2 cores, so 2 ranks run on dedicated cores and the model's
prediction (``result.virtual_wall_time``, from thread CPU time and a network
model) can be compared with the wall time measured in the same launch. The
network model is this machine's own MPI (shared memory), measured by a
ping-pong at the start of each launch: what is checked is the model's
bookkeeping (compute between messages, the max rule, waits not counted), not
an InfiniBand cluster. Each launch alternates solves with virtual time on (the
prediction) and off (the measured wall time: max over ranks of
``SolveResult.wall_time``) after one warm-up solve of each; medians over the
repeats that no other process disturbed (see ``ok``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vt_cases import CLEAN_OTHER_CORES, launch  # noqa: E402

# label -> worker arguments
CASES = {
    "native LinearODE 2^20, full ML cf2 FCF": ["--case", "linear_ode", "--config", "full", "--log2n", "20"],
    "native LinearODE 2^20, ml=2 cf2 FCF": ["--case", "linear_ode", "--config", "ml2", "--log2n", "20"],
    "native LinearODE 2^20, full ML cf8 F": ["--case", "linear_ode", "--config", "cf8", "--log2n", "20"],
    "Python App (numpy) 2^15, full ML cf2 FCF": ["--case", "python_app", "--config", "full", "--log2n", "15"],
    "Python App (numpy) 2^15, ml=2 cf2 FCF": ["--case", "python_app", "--config", "ml2", "--log2n", "15"],
    "native ResNet depth 256, exact": ["--case", "resnet", "--config", "exact", "--depth", "256"],
    "native ResNet depth 256, one-shot": ["--case", "resnet", "--config", "one_shot", "--depth", "256"],
}
QUICK = {
    "native LinearODE 2^20, full ML cf2 FCF": ["--log2n", "17"],
    "native LinearODE 2^20, ml=2 cf2 FCF": ["--log2n", "17"],
    "native LinearODE 2^20, full ML cf8 F": ["--log2n", "17"],
    "Python App (numpy) 2^15, full ML cf2 FCF": ["--log2n", "13"],
    "Python App (numpy) 2^15, ml=2 cf2 FCF": ["--log2n", "13"],
    "native ResNet depth 256, exact": ["--depth", "64"],
    "native ResNet depth 256, one-shot": ["--depth", "64"],
}
TORCH = {"torch conv ResNet depth 32, exact": ["--case", "torch_conv", "--depth", "32", "--batch", "16"]}


def busy_cores(interval: float = 0.5) -> float:
    """Cores busy (every process) over ``interval`` seconds, from /proc/stat."""

    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except OSError:
        return 0.0
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / max(t1 - t0, 1))


def wait_idle(max_wait: float) -> float:
    deadline = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > 0.25 and time.monotonic() < deadline:
        time.sleep(2.0)
        busy = busy_cores()
    return busy


def clean(run: dict) -> bool:
    return run["other_cores"] < CLEAN_OTHER_CORES


def summarize(record: dict) -> dict:
    on = [r for r in record["runs"] if r["virtual_on"]]
    off = [r for r in record["runs"] if not r["virtual_on"]]
    off_clean = [r for r in off if clean(r)]
    on_clean = [r for r in on if clean(r)]
    measured = statistics.median(r["wall"] for r in (off_clean or off))
    predicted = statistics.median(r["virtual"] for r in (on_clean or on))
    return dict(
        predicted=predicted,
        measured=measured,
        ratio=predicted / measured,
        overhead=statistics.median(r["wall"] for r in on) / statistics.median(r["wall"] for r in off),
        ok=f"{len(off_clean)}/{len(off)}",
        iterations=off[0]["iterations"],
        network=record.get("network", {}),
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--quick", action="store_true", help="smaller problems, 2 repeats")
    p.add_argument("--torch", action="store_true", help="also a pyxbraid.torch conv ResNet (needs torch)")
    p.add_argument("--only", default="", help="run the cases whose label contains this text")
    p.add_argument("--wait-idle", type=float, default=60.0, help="wait up to this long for an idle machine")
    p.add_argument("--clean", type=int, default=3, help="repeat until this many undisturbed repeats ...")
    p.add_argument("--max-seconds", type=float, default=120.0, help="... or this long, per launch")
    args = p.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    cases = dict(CASES, **(TORCH if args.torch else {}))
    if args.only:
        cases = {k: v for k, v in cases.items() if args.only in k}
    ranks = [int(x) for x in args.ranks.split(",")]
    started = time.time()
    print("=" * 110)
    print("virtual time: predicted (result.virtual_wall_time) against measured wall time, one core per rank")
    print(f"machine : {platform.platform()}; {os.cpu_count()} CPUs; python {platform.python_version()}")
    print(
        f"timing  : {repeats}+ repeats per launch, more until {args.clean} are undisturbed (at most "
        f"{args.max_seconds:g} s); virtual time on/off alternating after a warm-up solve of each; medians\n"
        "          of the undisturbed repeats (ok); measured = max over ranks of SolveResult.wall_time"
    )
    print("network : this machine's MPI, measured per launch by a ping-pong between ranks 0 and 1")
    print("=" * 110)
    header = (
        f"{'case':44s} {'P':>2s} {'it':>3s} {'predicted s':>12s} {'measured s':>11s} {'pred/meas':>9s} "
        f"{'vt cost':>8s} {'ok':>4s}  network (latency, bandwidth)"
    )
    print(header)
    print("-" * len(header))
    for label, case_args in cases.items():
        extra = QUICK.get(label, []) if args.quick else []
        for P in ranks:
            busy = wait_idle(args.wait_idle)
            record = launch(
                P,
                [*case_args, *extra, "--virtual", "both", "--network", "local", "--repeats", str(repeats)]
                + ["--clean", str(args.clean), "--max-seconds", str(args.max_seconds)],
            )
            s = summarize(record)
            net = s["network"]
            net_text = (
                f"{net['virtual_latency'] * 1e6:.2f} us, {net['virtual_bandwidth'] / 1e9:.2f} GB/s"
                if net and P > 1
                else "-"
            )
            print(
                f"{label:44s} {P:2d} {s['iterations']:3d} {s['predicted']:12.4f} {s['measured']:11.4f} "
                f"{s['ratio']:9.3f} {s['overhead']:8.3f} {s['ok']:>4s}  {net_text}"
                + (f"  (busy cores before: {busy:.2f})" if busy > 0.25 else ""),
                flush=True,
            )
    print(
        f"\npred/meas: the prediction over the measurement (1 = exact); vt cost: wall time with virtual time on "
        f"over off.\nok: repeats during which other processes used less than {CLEAN_OTHER_CORES} cores "
        f"(/proc/stat).\ntotal {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
