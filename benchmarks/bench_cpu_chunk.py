"""CPU benchmark of the torch chunked form: log-linear (L = 15) against the same code at L = 1.

Each configuration runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is
its own; the table reports the median forward time of 3 runs and the peak RSS above the
process's baseline after the inputs were built.

    python benchmarks/bench_cpu_chunk.py [--lengths 1024 2048 ...] [--backward]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

HEADS, DIM = 8, 64


def run_one(length, num_levels, delta, backward):
    import torch

    from hf_loglinear import loglinear_attention

    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    q = (torch.randn(1, length, 1, DIM) * DIM**-0.5).requires_grad_(backward)
    k = torch.nn.functional.normalize(torch.randn(1, length, 1, DIM), dim=-1).requires_grad_(backward)
    v = torch.randn(1, length, HEADS, DIM).requires_grad_(backward)
    g = (-0.1 * torch.rand(1, length, HEADS)).requires_grad_(backward)
    lam = torch.rand(1, length, HEADS, num_levels).requires_grad_(backward)
    beta = torch.rand(1, length, HEADS).requires_grad_(backward) if delta else None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        start = time.perf_counter()
        o, _ = loglinear_attention(q, k, v, g, lam, beta, backend="torch")
        if backward:
            o.sum().backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {"seconds": statistics.median(times), "peak_mib": peak / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--backward", action="store_true", help="time forward + backward")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        length, levels, delta = int(args.one[0]), int(args.one[1]), args.one[2] == "1"
        print(json.dumps(run_one(length, levels, delta, args.backward)))
        return
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **_: x  # noqa: E731
    rows = []
    jobs = [(t, d) for d in (False, True) for t in args.lengths]
    for length, delta in tqdm(jobs, desc="configs"):
        result = {}
        for levels in (1, 15):
            cmd = [sys.executable, __file__, "--one", str(length), str(levels), "1" if delta else "0"]
            cmd += ["--backward"] if args.backward else []
            result[levels] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        rows.append((length, delta, result))
    mode = "forward + backward" if args.backward else "forward"
    print(f"\nTorch chunked form on CPU, {mode}, B=1, H={HEADS}, K=V={DIM}, G=1, chunk 64, float32")
    print("| variant | T | L=1 s | L=15 s | ratio | L=1 peak MiB | L=15 peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for length, delta, r in rows:
        name = "gated delta rule" if delta else "mamba2 (scalar decay)"
        a, b = r[1], r[15]
        print(f"| {name} | {length} | {a['seconds']:.3f} | {b['seconds']:.3f} | {b['seconds'] / a['seconds']:.2f} "
              f"| {a['peak_mib']:.0f} | {b['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
