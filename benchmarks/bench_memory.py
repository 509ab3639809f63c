"""Memory of one training gradient: peak RSS above the baseline, each case in a fresh process.

The issue's configuration: the native ResNet of width 32 and depth 512 on a
batch of 2000 peaks-like points, one rank; layer-serial, exact and one-shot
layer-parallel (max_levels 3, cfactor 4), and PyTorch autograd in float64 on
the same network (when torch is installed). Each case runs in its own
process: baseline = RSS after imports, network and data are built; the
figure is the peak RSS (ru_maxrss) after two gradient evaluations minus it.

    .venv/bin/python benchmarks/bench_memory.py [--width 32] [--depth 512] [--batch 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

CASES = ("layer-serial", "exact", "one-shot", "torch autograd float64")


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(case: str, width: int, depth: int, batch: int) -> None:
    import numpy as np

    from pyxbraid import nn

    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (batch, 2))
    y = rng.integers(0, 5, batch)
    net = nn.ResNet(2, width, depth, 5, seed=1)
    if case == "torch autograd float64":
        import torch

        torch.set_num_threads(1)
        params = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in net.parameters().items()}
        tx, ty = torch.tensor(x), torch.tensor(y)

        def act(z):  # the network's smooth ReLU
            return torch.where(z <= -0.1, torch.zeros_like(z), torch.where(z >= 0.1, z, (z + 0.1) ** 2 / 0.4))

        def gradient():
            for v in params.values():
                v.grad = None
            u = act(tx @ params["opening.weight"].T + params["opening.bias"])
            for k in range(depth):
                u = u + net.h * act(u @ params["layers.weight"][k].T + params["layers.bias"][k])
            loss = torch.nn.functional.cross_entropy(u @ params["classifier.weight"].T + params["classifier.bias"], ty)
            loss.backward()
    else:
        lp = None
        if case != "layer-serial":
            lp = dict(max_levels=3, cfactor=4, one_shot=case == "one-shot", max_iter=2 if case == "one-shot" else 100)
        trainer = nn.Trainer(net, progress=False, layer_parallel=lp)

        def gradient():
            trainer.loss_and_gradient(x, y)

    base = _rss_now()
    for _ in range(2):
        gradient()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"case": case, "base": base, "peak": peak}), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.width, args.depth, args.batch)
        return
    states = args.batch * args.width * 8 * (args.depth + 1)
    print(
        f"memory of one gradient: ResNet width {args.width}, depth {args.depth}, batch {args.batch}, 1 rank "
        f"(all {args.depth + 1} states: {states / 2**30:.2f} GiB)"
    )
    print(f"{'case':<24} {'peak RSS above baseline':>24}")
    for case in CASES:
        cmd = [sys.executable, __file__, "--worker", case]
        cmd += ["--width", str(args.width), "--depth", str(args.depth), "--batch", str(args.batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if line is None:
            reason = "torch not installed" if "No module named 'torch'" in proc.stderr else proc.stderr.strip()[-200:]
            print(f"{case:<24} {'-':>24}  ({reason})")
            continue
        r = json.loads(line[7:])
        print(f"{case:<24} {(r['peak'] - r['base']) / 2**30:>20.2f} GiB")


if __name__ == "__main__":
    main()
