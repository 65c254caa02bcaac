"""Tile and warp sweeps of two launch-bound kernels on the GPU, each configuration checked first.

    python benchmarks/sweep_tiles.py scan     # the Gated DeltaNet level scan (chunk_triton._delta_scan_tiles)
    python benchmarks/sweep_tiles.py step     # the decode step (step_triton._step_tiles)
    python benchmarks/sweep_tiles.py grad     # the Mamba-2 chunk gradient kernel (chunk_triton._grad_tiles)
    python benchmarks/sweep_tiles.py m2bwd    # the Mamba-2 reverse level scan (chunk_triton._reverse_scan_launch)
    python benchmarks/sweep_tiles.py m2fwd    # the Mamba-2 forward level scans' warps / stages (_scan_tiles)

``scan``: for each (value tile, pipeline stages, warps) of the delta rule's level scan, the
forward's max relative error against the float64 torch chunked form (bf16 inputs, T = 1000),
then the median forward time at the ANCHORS.md shape (6 heads x 192 / 384, B = 32768 / T) at
T = 2K and 8K. ``step``: for each (value tile, warps), the step's output against the torch step
(fp32 state), then its time replayed from a CUDA graph at 48 heads x 128 x 64, 15 levels, for
batch 16 / 64 / 256 at positions 1023 and 65535 and averaged over 64 consecutive positions from
65536 (what a serving loop sees: the merge level changes from step to step), against the
read-once floor. ``grad``: for each (value tile, warps, stages) of ``chunk_grad_kernel``, the largest
max relative error over o and every gradient against float64 (bf16 inputs, T = 1000, 15
levels), then the median fwd and fwd+bwd time at the ANCHORS.md Mamba-2 shape (48 heads x
128 / 64, B = 32768 / T, at least 1) at T = 2K and 8K. ``m2bwd`` / ``m2fwd``: the same for the
warps and pipeline stages of the Mamba-2 reverse level scan (which also takes the readout's
gradient) / forward level scans.
Prints a table last; the chosen configuration goes into the wrapper by hand.
"""
from __future__ import annotations

import sys

import torch
import triton

from hf_loglinear.levels import levels_for_length
from hf_loglinear.ops import LevelState, loglinear_attention, loglinear_attention_step
from hf_loglinear.kernels import chunk_triton, step_triton

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_kernels import GDN, MAMBA2, fwd_bwd, graphed_time, inputs, rel  # noqa: E402


def sweep_scan():
    rows = []
    base = chunk_triton._delta_scan_tiles
    for bv, stages, warps in [(64, 2, 8), (64, 1, 8), (64, 2, 4), (128, 1, 8), (64, 1, 16)]:
        def tiles(dot, top, bv=bv, stages=stages, warps=warps):  # the top keeps one stage (shared memory)
            return bv, dict(num_stages=1 if top else stages, num_warps=warps)

        chunk_triton._delta_scan_tiles = tiles
        x = inputs(1, 1000, **GDN, num_levels=12, delta=True, dtype=torch.bfloat16, seed=1)
        try:
            o = loglinear_attention(*x[:5], beta=x[5], backend="triton")[0]
        except Exception as e:  # a configuration that does not compile or fit: say so, go on
            rows.append(f"| {bv} | {stages} | {warps} | {type(e).__name__} | - | - |")
            print(rows[-1], str(e)[:200], flush=True)
            continue
        ref = loglinear_attention(*[a if a is None else a.double() for a in x[:5]], beta=x[5].double(), backend="torch")[0]
        err = rel(o, ref)
        times = []
        for length in (2048, 8192):
            xs = inputs(32768 // length, length, **GDN, num_levels=levels_for_length(length), delta=True, dtype=torch.bfloat16)
            times.append(triton.testing.do_bench(lambda: loglinear_attention(*xs[:5], beta=xs[5], backend="triton"),
                                                 return_mode="median"))
        rows.append(f"| {bv} | {stages} | {warps} | {err:.1e} | {times[0]:.2f} ms | {times[1]:.2f} ms |")
        print(rows[-1], flush=True)
    chunk_triton._delta_scan_tiles = base
    return ["| BV | stages | warps | o rel. error (bf16, T=1000) | fwd T=2K B=16 | fwd T=8K B=4 |", "|---|---|---|---|---|---|", *rows]


def sweep_step():
    big = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    bw = 2 * big.numel() / (triton.testing.do_bench(lambda: big.clone(), return_mode="median") * 1e-3)
    del big
    heads, key_dim, value_dim, num_levels = 48, 128, 64, 15
    base = step_triton._step_tiles
    rows = []
    for bv, warps in [(32, 4), (16, 4), (16, 2), (32, 2), (64, 4), (32, 8), (64, 8), (16, 1)]:
        step_triton._step_tiles = lambda key_dim, value_dim, bv=bv, warps=warps: (bv, warps)
        cells = []
        for batch in (16, 64, 256):
            levels = torch.randn(batch, heads, num_levels, key_dim, value_dim, device="cuda") * 0.01
            q, k = torch.randn(2, batch, 1, key_dim, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(batch, heads, value_dim, device="cuda", dtype=torch.bfloat16)
            g = -torch.rand(batch, heads, device="cuda")
            lam = torch.rand(batch, heads, num_levels, device="cuda")
            if batch == 16:  # one step against the torch step
                pos = torch.full((batch,), 65535, dtype=torch.int64, device="cuda")
                o = loglinear_attention_step(LevelState(levels.clone(), pos.clone()), q, k, v, g, lam, backend="triton")[0]
                ref = loglinear_attention_step(LevelState(levels.clone(), pos.clone()), q, k, v, g, lam, backend="torch")[0]
                cells.append(f"{rel(o, ref):.1e}")
            floor = levels.numel() * 4 / bw
            for position, count in ((1023, 0), (65535, 0), (65536, 64)):
                state = LevelState(levels.clone(), torch.full((batch,), position, dtype=torch.int64, device="cuda"))

                def step(state=state, position=position, count=count):
                    loglinear_attention_step(state, q, k, v, g, lam, backend="triton")
                    if count == 0:
                        state.position.fill_(position)  # the same position every step

                t = graphed_time(step, steps=64)  # 64 consecutive positions when count > 0
                cells.append(f"{t * 1e-3 / floor:.2f}")
            del levels
        rows.append(f"| {bv} | {warps} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    step_triton._step_tiles = base
    head = "| BV | warps | rel. error | " + " | ".join(
        f"B={b} {p}" for b in (16, 64, 256) for p in ("1023", "65535", "65536+64")) + " |"
    return [f"step time / read-once floor (CUDA graph), copy bandwidth {bw / 1e12:.2f} TB/s", head, "|---" * 12 + "|", *rows]


def _grads(x, backend, cast):
    """o and every input gradient of one Mamba-2 call (a fixed random dO)."""
    leaves = [cast(a).detach().clone().requires_grad_() for a in x[:5]]
    o = loglinear_attention(*leaves, backend=backend)[0]
    do = torch.randn(o.shape, generator=torch.Generator(device="cuda").manual_seed(9), device="cuda")
    (o.double() * do.double()).sum().backward()
    return [o] + [a.grad for a in leaves]


def _sweep_mamba2(hook, configs, lengths, head):
    """Each configuration of ``chunk_triton.<hook>`` (a (label, tiles function) pair): the largest
    max relative error over o and every gradient against float64 (bf16, T = 1000, 15 levels),
    then the median fwd and fwd+bwd time at the ANCHORS.md Mamba-2 shape at ``lengths``."""
    base = getattr(chunk_triton, hook)
    x = inputs(1, 1000, **MAMBA2, num_levels=15, delta=False, dtype=torch.bfloat16, seed=1)
    ref = _grads(x, "torch", lambda a: a.double())
    rows = []
    for label, tiles in configs:
        setattr(chunk_triton, hook, tiles)
        try:
            err = max(rel(a, b) for a, b in zip(_grads(x, "triton", lambda a: a), ref))
        except Exception as e:  # a configuration that does not compile or fit: say so, go on
            rows.append(f"| {label} | {type(e).__name__} |" + " - |" * 2 * len(lengths))
            print(rows[-1], str(e)[:200], flush=True)
            continue
        cells = []
        for length in lengths:
            xs = inputs(max(1, 32768 // length), length, **MAMBA2, num_levels=levels_for_length(length), delta=False,
                        dtype=torch.bfloat16)
            leaves = [a.detach().clone().requires_grad_() for a in xs[:5]]
            fwd = lambda leaves=leaves: loglinear_attention(*leaves, backend="triton")[0]  # noqa: E731
            with torch.no_grad():
                cells.append(triton.testing.do_bench(fwd, return_mode="median"))
            cells.append(triton.testing.do_bench(fwd_bwd(fwd, leaves), return_mode="median"))
        rows.append(f"| {label} | {err:.1e} | " + " | ".join(f"{t:.2f} ms" for t in cells) + " |")
        print(rows[-1], flush=True)
    setattr(chunk_triton, hook, base)
    times = " | ".join(f"{op} T={n}" for n in lengths for op in ("fwd", "fwd+bwd"))
    return [f"| {head} | max rel. error (bf16, T=1000) | {times} |", "|---" * (3 + 2 * len(lengths)) + "|", *rows]


def sweep_grad():
    default = chunk_triton._grad_tiles(MAMBA2["value_dim"], triton.language.bfloat16)
    others = [(bv, dict(num_warps=w, num_stages=st)) for bv, w, st in ((64, 4, 3), (64, 4, 2), (64, 4, 1), (64, 8, 2), (32, 4, 3))]
    configs = [(f"{bv} / {_launch_label(o)}", lambda value_dim, dot, t=(bv, o): t)
               for bv, o in [default] + [t for t in others if t != default]]
    return _sweep_mamba2("_grad_tiles", configs, (2048, 8192), "chunk_grad BV / warps / stages")


def sweep_m2bwd():
    default = chunk_triton._reverse_scan_launch(triton.language.bfloat16)
    others = [dict(num_warps=w, num_stages=s) for w, s in ((8, 3), (8, 2), (4, 3), (4, 2), (4, 1), (2, 2), (16, 2))]
    configs = [(_launch_label(o), lambda dot, o=o: o) for o in [default] + [o for o in others if o != default]]
    return _sweep_mamba2("_reverse_scan_launch", configs, (2048, 8192), "reverse scan warps / stages")


def sweep_m2fwd():
    base = chunk_triton._scan_tiles

    def launch(options):
        return lambda value_dim: (base(value_dim)[0], options)

    others = [dict(num_warps=w, num_stages=s) for w, s in ((4, 2), (4, 1), (8, 3), (8, 2), (2, 2))]
    configs = [("4 / 3 (default)", base)] + [(_launch_label(o), launch(o)) for o in others]
    return _sweep_mamba2("_scan_tiles", configs, (2048, 8192), "forward scan warps / stages (the top: 1 stage)")


def _launch_label(options):
    return f"{options.get('num_warps', '-')} / {options.get('num_stages', 'default')}"


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "scan"
    sweeps = {"scan": sweep_scan, "step": sweep_step, "grad": sweep_grad, "m2bwd": sweep_m2bwd, "m2fwd": sweep_m2fwd}
    if what not in sweeps:
        sys.exit(f"usage: python benchmarks/sweep_tiles.py {' | '.join(sweeps)}")
    print("\n".join(sweeps[what]()), flush=True)
