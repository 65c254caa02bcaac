"""Whether the Gated DeltaNet forward faults on the GPU at a head size, and with how many
pipeline stages in its level scan: one case per process (an illegal access poisons the CUDA
context), launches blocking. Prints ``ok`` or ``FAIL`` with the max relative errors of o and
of the final level states against the float64 torch form (T = 1000, L = 12, two heads;
bench_kernels.py's tolerances: 1e-4 for fp32 inputs, 2e-2 for half) and exits 1 on FAIL: a
miscompiled tile can run without a fault.

    CUDA_LAUNCH_BLOCKING=1 python benchmarks/debug_gdn_forward.py K V dtype [stages[xBV[xwarps]]]
    python benchmarks/debug_gdn_forward.py 192 384 bfloat16 [stages[xBV[xwarps]]] time|split
    python benchmarks/debug_gdn_forward.py 192 384 bfloat16 sweep CONFIG [CONFIG ...]

``stages[xBV[xwarps]]``: the level scan's pipeline stages (of the buckets' launch; the top keeps
its own), and its value tile and warps if given (e.g. 2x64x8; ``chunk_triton._delta_scan_tiles``).
``time``: after the check, the forward's median time at the ANCHORS.md shape (6 heads x 192 /
384, B = 32768 / T) at T = 2K and 8K, with num_levels = 1 and fla's chunk_gated_delta_rule
forward beside it (same run). ``split``: after the check, the median time of each Triton launch
of that forward, keyed by kernel and by its TOP flag (torch.profiler groups by
kernel name alone, so the bucket scan's two launches would share a row), then fla's forward per
kernel (torch.profiler). Events are recorded on the current stream: right for this dense
forward, not for the bucket scan's top, which runs on a side stream (rows from an initial
state); the decay kernel (decay_triton) is not split out.
``long``: the check with the forward cut into segments of 256 tokens
(``segments.DELTA_STATE_BUDGET`` forced down; each segment continues from the last one's
level state), then the forward alone without gradients at B = 1 for T = 128K and 1M
(``levels_for_length``): median time and peak memory, the recorded states bounded by half the
free memory (the default budget).
``from_state``: after the check, 256K tokens at B = 1 without gradients from a level state at
an aligned and an unaligned position, each call timed (``time_from_state``).
``sweep``: launch options tried in one process, each checked as above and then split at 2K and
8K: a CONFIG as ``launches.py`` takes it (``default``, ``kernel:option=value,...`` joined by
``+``, ``kernel/TOP=0|1:...``; e.g. ``ut_factors_kernel:num_warps=8+chunk_output_kernel:num_stages=2``).
"""
import os
import sys
import traceback

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from hf_loglinear.kernels import chunk_triton
from hf_loglinear.ops import loglinear_attention
from launches import cells_line, install, per_launch

K, V, dtype = int(sys.argv[1]), int(sys.argv[2]), getattr(torch, sys.argv[3])
args = sys.argv[4:]
if args and args[0][0].isdigit():
    stages, bv, warps = (args.pop(0).split("x") + [None, None])[:3]

    def tiles(dot, top, base=chunk_triton._delta_scan_tiles):
        tile, launch = base(dot, top)
        return int(bv or tile), {**launch, "num_stages": launch["num_stages"] if top else int(stages),
                                 "num_warps": int(warps or launch["num_warps"])}

    chunk_triton._delta_scan_tiles = tiles
MODE = args[0] if args else "check"


def check(label):
    """The forward at T = 1000 against float64: prints ok / FAIL, returns whether it passed."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    q, k = (torch.nn.functional.normalize(rand(1, 1000, 2, K), dim=-1).to(dtype) for _ in range(2))
    v = rand(1, 1000, 2, V).to(dtype)
    g = -torch.rand(1, 1000, 2, device="cuda") * 0.1
    lam = torch.rand(1, 1000, 2, 12, device="cuda")
    beta = torch.rand(1, 1000, 2, device="cuda")
    try:
        o, final = loglinear_attention(q, k, v, g, lam, beta=beta, backend="triton", output_final_state=True)
        ref, ref_final = loglinear_attention(q.double(), k.double(), v.double(), g.double(), lam.double(),
                                             beta=beta.double(), backend="torch", output_final_state=True)
        rel = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()  # noqa: E731
        err, err_final = rel(o, ref), rel(final.levels, ref_final.levels)
        tol = 1e-4 if dtype == torch.float32 else 2e-2  # bench_kernels.py's tolerances
        print("ok" if max(err, err_final) < tol else "FAIL", label, f"o rel. error {err:.1e}, final {err_final:.1e} "
              f"(tolerance {tol:.0e})", flush=True)
        return max(err, err_final) < tol
    except Exception:
        print("FAIL", label, traceback.format_exc()[-600:], flush=True)
        return False


def anchor_inputs(length):
    from bench_kernels import GDN, inputs
    from hf_loglinear.levels import levels_for_length

    return inputs(32768 // length, length, **GDN, num_levels=levels_for_length(length), delta=True, dtype=torch.bfloat16)


def split(label, config="default"):
    """Median time of each launch of the anchor-shape forward at 2K and 8K (or the lengths in
    $SPLIT_LENGTHS, comma-separated), and the total."""
    for length in [int(t) for t in os.environ.get("SPLIT_LENGTHS", "2048,8192").split(",")]:
        x = anchor_inputs(length)
        total, cells = per_launch(lambda: loglinear_attention(*x[:5], beta=x[5], backend="triton"), config)
        print(f"gdn fwd split {label} T={length}: {cells_line(total, cells)}", flush=True)

def fla_split():
    """fla's chunk_gated_delta_rule forward per kernel at 2K and 8K (torch.profiler, 10 calls)."""
    from bench_kernels import profiled
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    for length in (2048, 8192):
        x = anchor_inputs(length)
        prof = profiled(lambda: chunk_gated_delta_rule(*x[:4], x[5], scale=1.0), 10)
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)
        print(f"fla fwd split T={length}: " + "; ".join(f"{e.key[:40]} {e.self_device_time_total / 10e3:.3f}"
                                                        for e in rows if e.self_device_time_total > 0), flush=True)


def time_long():
    """The forward without gradients at B = 1, 128K and 1M tokens: time and peak memory."""
    import triton
    from bench_kernels import GDN, inputs
    from hf_loglinear.levels import levels_for_length

    for length in (1 << 17, 1 << 20):
        x = inputs(1, length, **GDN, num_levels=levels_for_length(length), delta=True, dtype=dtype)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            t = triton.testing.do_bench(lambda: loglinear_attention(*x[:5], beta=x[5], backend="triton",
                                                                    output_final_state=True), return_mode="median")
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        print(f"gdn fwd long T={length} B=1 L={levels_for_length(length)}: {t:.1f} ms, peak {peak:.2f} GiB", flush=True)
        del x
        torch.cuda.empty_cache()


def time_from_state():
    """The forward without gradients of 256K tokens at B = 1 continuing from a level state at
    position 262144 (aligned to the segment length) and at 367616 (not), then from 0 without a
    state: each call timed on its own (the first compiles), then torch.profiler's top kernels
    of one more call. (gpu22a: a 1M forward in three unaligned segments took 4.82 s, four
    aligned ones 0.29 s.)"""
    import time

    from bench_kernels import GDN, inputs, profiled
    from hf_loglinear.levels import levels_for_length
    from hf_loglinear.ops import LevelState

    length = 1 << 18
    for start in (1 << 18, 367616, 0):
        num_levels = levels_for_length(start + length)
        x = inputs(1, length, **GDN, num_levels=num_levels, delta=True, dtype=dtype)
        heads, key_dim, value_dim = x[2].shape[2], x[0].shape[-1], x[2].shape[-1]
        init = None
        if start:
            levels = torch.randn(1, heads, num_levels, key_dim, value_dim, device="cuda") * 1e-2
            init = LevelState(levels, torch.tensor([start], device="cuda"))
        run = lambda: loglinear_attention(*x[:5], beta=x[5], backend="triton", initial_state=init,  # noqa: E731
                                          output_final_state=True)
        times = []
        with torch.no_grad():
            for _ in range(4):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                run()
                torch.cuda.synchronize()
                times.append(1e3 * (time.perf_counter() - t0))
            prof = profiled(run, 1)
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)[:8]
        print(f"gdn fwd from state at {start} T={length} B=1 L={num_levels}: calls " + " / ".join(f"{t:.0f}" for t in times)
              + " ms; top kernels: " + "; ".join(f"{e.key[:40]} {e.self_device_time_total / 1e3:.1f} ms x{e.count}"
                                                  for e in rows), flush=True)
        del x, init
        torch.cuda.empty_cache()


def time_anchor():
    import triton

    for length in (2048, 8192):
        x = anchor_inputs(length)
        cells = {}
        for name, lam in (("ours", x[4]), ("ours L=1", x[4][..., :1].contiguous())):
            cells[name] = triton.testing.do_bench(lambda: loglinear_attention(*x[:4], lam, beta=x[5], backend="triton"), return_mode="median")
        try:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule

            cells["fla gated_delta_rule"] = triton.testing.do_bench(lambda: chunk_gated_delta_rule(*x[:4], x[5], scale=1.0), return_mode="median")
        except Exception as e:  # fla missing or refusing: say so
            print(f"fla: {type(e).__name__}: {str(e)[:160]}")
        print(f"gdn fwd T={length} B={32768 // length}: " + ", ".join(f"{k} {t:.2f} ms" for k, t in cells.items()), flush=True)


if MODE == "sweep":
    for config in args[1:]:
        install(config, {})
        if check(config):
            split(config, config)
    sys.exit(0)
if MODE == "long":  # the check in segments of 256 tokens: a budget of 4 chunks of its recorded states
    from hf_loglinear.kernels import segments as cut

    num_js = chunk_triton.inter_chunk_scans(-(-1000 // 64) - 1, 12, 64)[0]
    cut.DELTA_STATE_BUDGET = 4 * num_js * 2 * K * V * torch.tensor([], dtype=dtype).element_size()
    whole, segments = chunk_triton._forward, []
    chunk_triton._forward = lambda q, *a: segments.append(q.shape[1]) or whole(q, *a)
if not check(sys.argv[1:]):
    sys.exit(1)
if MODE == "long":
    print("segments of the check:", segments, flush=True)
    cut.DELTA_STATE_BUDGET, chunk_triton._forward = None, whole
    time_long()
if MODE == "time":
    time_anchor()
if MODE == "from_state":
    time_from_state()
if MODE == "split":
    split("")
    fla_split()
