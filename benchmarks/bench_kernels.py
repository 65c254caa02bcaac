"""GPU check and benchmark of the Triton kernels against the anchors (ANCHORS.md shapes), in one run.

    PYTHONUNBUFFERED=1 python benchmarks/bench_kernels.py [--quick] [--out DIR]
    TRITON_INTERPRET=1 python benchmarks/bench_kernels.py --smoke    # CPU: every check, tiny shapes (CI)

1. correctness at real shapes against a float64 reference (the torch chunked form run in
   float64 on the GPU): fp32 and bf16 inputs, forward, final state and every gradient,
   max relative error per tensor (max |x - ref| / max |ref|). The "dense" / "packed" checks
   (no initial or final state) take the Triton backwards, the others the recomputation;
2. median times (triton.testing.do_bench) and peak extra memory: ours (log-linear and
   num_levels=1), fla 0.6 chunk_log_linear_attn / chunk_simple_gla / chunk_gated_delta_rule
   when importable, torch SDPA causal; B = 32768 / T;
3. decode step time (eager and replayed from a CUDA graph) vs batch and position against the
   bytes-moved floors (state bytes, and twice that, over the
   copy bandwidth measured here).
Prints a markdown table at the end; also writes it to DIR/bench_kernels.md when --out is given.

--quick (about 3 minutes): the Mamba-2 checks (fp32 + bf16; the Triton backward on dense
T = 2048 and 1000 and four packed documents in 3000 tokens; continuing from an initial state with
the final state, dense and packed) and the dense Gated DeltaNet check, exits 1 if any is over
tolerance, then Mamba-2 fwd and fwd+bwd at T = 2K, 16K, 64K for L = 15 and L = 1, and SDPA fwd /
fwd+bwd. ``--variants mamba2`` or ``gdn`` restricts checks and timings to one model;
``--profile 2048,65536`` prints where a Mamba-2 fwd+bwd (a GDN forward, then fwd+bwd, with
``--variants gdn``) spends its time, per kernel; ``--lengths ''`` skips the timings (e.g. for the decode table alone).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from hf_loglinear.levels import levels_for_length
from hf_loglinear.ops import LevelState, loglinear_attention, loglinear_attention_step

MAMBA2 = dict(heads=48, groups=1, key_dim=128, value_dim=64)
GDN = dict(heads=6, groups=6, key_dim=192, value_dim=384)
DEVICE = "cuda"  # --smoke: "cpu" under TRITON_INTERPRET=1
CHECK_DTYPES = (torch.float32, torch.bfloat16)  # --check-dtypes
FORWARD_ONLY = False  # --forward-only
ROWS: list[str] = []
FAILED: list[str] = []
# Max relative error allowed per tensor. The reference runs on the same (rounded) inputs, so what
# is left is our arithmetic: fp32 inputs use IEEE fp32 dots (observed <= 1e-6; 1e-4 leaves room
# for the order of fp32 atomics over long sums). bf16 inputs: the products take bf16 operands
# (each factor rounded to 2^-9 = 2e-3; the Gated DeltaNet's UT inverse stays fp32 / tf32), the
# recorded states, the GDN chunk factors and the output are bf16; 2e-2 is five roundings of 2^-9. The largest seen on
# the H200 is dg at 1.2e-2 (a reverse sum along the row of q.dq - k.dk, where terms cancel).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def record(label, dtype, errs):
    text = ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
    bad = [k for k, v in errs.items() if not v <= TOLERANCE[dtype]]
    if bad:
        FAILED.append(f"{label} {str(dtype)[6:]}: {', '.join(bad)} over {TOLERANCE[dtype]:.0e}")
    log(f"check {label} {str(dtype)[6:]}: {text}{'  FAILED ' + ', '.join(bad) if bad else ''}")
    return text


def log(*a):
    print(*a, flush=True)


def inputs(batch, length, heads, groups, key_dim, value_dim, num_levels, delta, dtype, seed=0):
    device = DEVICE
    gen = torch.Generator(device=device).manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, device=device)  # noqa: E731
    q = rand(batch, length, groups, key_dim)
    k = rand(batch, length, groups, key_dim)
    if delta:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    else:
        q, k = q * key_dim**-0.5, k * key_dim**-0.5
    v = rand(batch, length, heads, value_dim)
    g = -F.softplus(rand(batch, length, heads)) * 0.05
    lam = torch.rand(batch, length, heads, num_levels, generator=gen, device=device)
    beta = torch.rand(batch, length, heads, generator=gen, device=device) if delta else None
    out = [q, k, v, g, lam, beta]
    return [x if x is None else x.to(dtype) for x in out[:3]] + out[3:]


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def check(name, shape, length, delta, num_levels, varlen=False):
    """Forward, final state and gradients vs the float64 torch chunked form."""
    for dtype in CHECK_DTYPES:
        x = inputs(1, length, **shape, num_levels=num_levels, delta=delta, dtype=dtype, seed=length)
        kw = {}
        if varlen:
            kw["cu_seqlens"] = torch.tensor([0, 7, length // 2, length], device=DEVICE)
            n = 3
        else:
            n = 1
        prefix = inputs(n, 200, **shape, num_levels=num_levels, delta=delta, dtype=torch.float64, seed=1)
        _, init = loglinear_attention(*prefix[:5], beta=prefix[5], output_final_state=True, backend="torch")
        init64 = LevelState(init.levels, init.position)
        init32 = LevelState(init.levels.float().requires_grad_(), init.position)
        leaves = [a if a is None else a.detach().clone().requires_grad_() for a in x]
        o, st = loglinear_attention(*leaves[:5], beta=leaves[5], initial_state=init32, output_final_state=True, backend="triton", **kw)
        gen = torch.Generator(device=DEVICE).manual_seed(9)
        do = torch.randn(o.shape, generator=gen, device=DEVICE)
        dst = torch.randn(st.levels.shape, generator=gen, device=DEVICE)
        ((o.float() * do).sum() + (st.levels * dst).sum()).backward()
        ref_leaves = [a if a is None else a.detach().double().requires_grad_() for a in x]
        ref_init = LevelState(init64.levels.detach().clone().requires_grad_(), init64.position)
        o_ref, st_ref = loglinear_attention(*ref_leaves[:5], beta=ref_leaves[5], initial_state=ref_init, output_final_state=True, backend="torch", **kw)
        ((o_ref * do.double()).sum() + (st_ref.levels * dst.double()).sum()).backward()
        errs = {"o": rel(o, o_ref), "final": rel(st.levels, st_ref.levels)}
        for nm, a, b in zip(("dq", "dk", "dv", "dg", "dlam", "dbeta"), leaves, ref_leaves):
            if a is not None:
                errs[nm] = rel(a.grad, b.grad)
        errs["dinit"] = rel(init32.levels.grad, ref_init.levels.grad)
        text = record(f"{name} T={length} L={num_levels}{' varlen' if varlen else ''}", dtype, errs)
        ROWS.append(f"| {name} | {length} | {num_levels} | {str(dtype)[6:]}{' varlen+init' if varlen else ' +init'} | {text} |")


def check_dense(name, shape, length, num_levels, cu_seqlens=None, delta=False):
    """No initial or final state (the Triton backward's case, dense rows or documents packed with
    ``cu_seqlens``) vs float64, every gradient."""
    kw = {} if cu_seqlens is None else {"cu_seqlens": torch.tensor(cu_seqlens, device=DEVICE)}
    kind = "dense" if cu_seqlens is None else f"packed {len(cu_seqlens) - 1} docs"
    names = ("o", "dq", "dk", "dv", "dg", "dlam") + (("dbeta",) if delta else ())
    for dtype in CHECK_DTYPES:
        x = inputs(1, length, **shape, num_levels=num_levels, delta=delta, dtype=dtype, seed=length)
        gen = torch.Generator(device=DEVICE).manual_seed(9)
        do = torch.randn(1, length, shape["heads"], shape["value_dim"], generator=gen, device=DEVICE)
        grads = []
        for backend, cast in (("triton", lambda a: a), ("torch", lambda a: a.double())):
            leaves = [a if a is None else cast(a).detach().clone().requires_grad_() for a in x]
            o = loglinear_attention(*leaves[:5], beta=leaves[5], backend=backend, **kw)[0]
            (o.double() * do.double()).sum().backward()
            grads.append([o] + [a.grad for a in leaves if a is not None])
        errs = {nm: rel(a, b) for nm, a, b in zip(names, *grads)}
        text = record(f"{name} {kind} T={length} L={num_levels}", dtype, errs)
        ROWS.append(f"| {name} | {length} | {num_levels} | {str(dtype)[6:]} {kind} (Triton bwd) | {text} |")


def bench(fn, reps_ms=200, slow_ms=2000):
    """(median ms, peak extra GiB) of ``fn``. After a warm-up call (it compiles), a call slower than
    ``slow_ms`` (the delta rule's training segments at 1M tokens) is the time, one call measured
    with CUDA events, instead of do_bench's dozens of calls."""
    import triton

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    t = start.elapsed_time(end)
    if t <= slow_ms:
        t = triton.testing.do_bench(fn, warmup=25, rep=reps_ms, return_mode="median")
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return t, peak


def fwd_bwd(fn, leaves):
    def run():
        o = fn()
        o.backward(torch.ones_like(o))
        for a in leaves:
            a.grad = None

    return run


def time_ours(res, variant, shape, batch, length, num_levels):
    delta = variant == "gdn"
    xs = inputs(batch, length, **shape, num_levels=num_levels, delta=delta, dtype=torch.bfloat16)
    tag = f"ours L={num_levels}"
    f = lambda: loglinear_attention(*xs[:5], beta=xs[5], backend="triton")[0]  # noqa: E731
    res[(variant, tag, "fwd")] = bench(f)
    if FORWARD_ONLY:
        return xs
    leaves = [a if a is None else a.detach().clone().requires_grad_() for a in xs]
    g = lambda: loglinear_attention(*leaves[:5], beta=leaves[5], backend="triton")[0]  # noqa: E731
    try:  # the Gated DeltaNet backward recomputes through torch: long T may not fit
        res[(variant, tag, "fwdbwd")] = bench(fwd_bwd(g, [a for a in leaves if a is not None]), 100)
    except torch.OutOfMemoryError as e:
        log(f"{variant} {tag} fwdbwd T={length}: out of memory: {str(e)[:160]}")
        torch.cuda.empty_cache()
    return xs


def time_sdpa(res, batch, length):
    q = torch.randn(batch, 16, length, 96, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    res[("attn", "sdpa", "fwd")] = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    if FORWARD_ONLY:
        return
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    res[("attn", "sdpa", "fwdbwd")] = bench(fwd_bwd(lambda: F.scaled_dot_product_attention(*leaves, is_causal=True), leaves))


def time_ops(length, quick, variants=("mamba2", "gdn")):
    """Both variants fwd and fwd+bwd at every T (Triton backwards); fla and GDN skipped with
    --quick."""
    batch = max(1, 32768 // length)
    res = {}
    if quick:
        if "mamba2" in variants:
            for num_levels in (15, 1):
                time_ours(res, "mamba2", MAMBA2, batch, length, num_levels)
            time_sdpa(res, batch, length)
        return res
    num_levels = levels_for_length(length)
    for variant, shape in (("mamba2", MAMBA2), ("gdn", GDN)):
        if variant not in variants:
            continue
        x = time_ours(res, variant, shape, batch, length, num_levels)
        time_ours(res, variant, shape, batch, length, 1)
        try:
            res.update(time_fla(variant, x, shape, length))
        except Exception as e:  # fla missing or refusing: say so in the table
            log(f"fla {variant} T={length}: {type(e).__name__}: {str(e)[:200]}")
    time_sdpa(res, batch, length)
    return res


def attempt(res, length, key, fn, reps_ms=200):
    """Time one anchor op; a failure (fla refusing a shape or not compiling) is logged, not fatal."""
    try:
        res[key] = bench(fn, reps_ms)
    except Exception as e:
        log(f"{' '.join(key)} T={length}: {type(e).__name__}: {str(e)[:200]}")


def time_fla(variant, x, shape, length):
    res = {}
    q, k, v, g, lam, beta = x
    rep = shape["heads"] // shape["groups"]
    qh, kh = q.repeat_interleave(rep, 2), k.repeat_interleave(rep, 2)
    if variant == "mamba2":
        from fla.ops.log_linear_attn import chunk_log_linear_attn
        from fla.ops.simple_gla import chunk_simple_gla

        attempt(res, length, (variant, "fla simple_gla", "fwd"), lambda: chunk_simple_gla(qh, kh, v, g, scale=1.0)[0])
        attempt(res, length, (variant, "fla log-linear", "fwd"), lambda: chunk_log_linear_attn(q, k, v, g, lam)[0])
        if not FORWARD_ONLY:
            leaves = [a.detach().clone().requires_grad_() for a in (qh, kh, v, g)]
            attempt(res, length, (variant, "fla simple_gla", "fwdbwd"),
                    fwd_bwd(lambda: chunk_simple_gla(*leaves, scale=1.0)[0], leaves), 100)
            leaves = [a.detach().clone().requires_grad_() for a in (q, k, v, g, lam)]
            attempt(res, length, (variant, "fla log-linear", "fwdbwd"), fwd_bwd(lambda: chunk_log_linear_attn(*leaves)[0], leaves), 100)
    else:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule

        attempt(res, length, (variant, "fla gated_delta_rule", "fwd"), lambda: chunk_gated_delta_rule(q, k, v, g, beta, scale=1.0)[0])
    return res


def time_long(lengths, variants):
    """Ours alone at B = 1 for long T: fwd and fwd+bwd time and peak memory (the target asks for
    1M tokens; under scalar decay the recorded states are linear in T, under the delta rule a
    long input runs in segments, ``kernels/segments.py``, timed with one call when slow:
    ``bench``)."""
    res = {}
    for variant in variants:
        for length in lengths:
            num_levels = levels_for_length(length)
            if variant == "gdn":
                from hf_loglinear.kernels import segments

                x = torch.empty(1, length, GDN["groups"], GDN["key_dim"], device="cuda", dtype=torch.bfloat16)
                v = torch.empty(1, length, GDN["heads"], GDN["value_dim"], device="cuda", dtype=torch.bfloat16)
                seg = [segments.segment_length(x, v, num_levels, v[..., 0], None, None, grad, False, 64) for grad in (False, True)]
                log(f"long gdn T={length}: segments of {seg[0]} tokens without gradients, {seg[1]} with (None: one pass)")
                del x, v
            try:
                time_ours(res, variant, MAMBA2 if variant == "mamba2" else GDN, 1, length, num_levels)
            except torch.OutOfMemoryError as e:
                log(f"long {variant} T={length}: out of memory: {str(e)[:160]}")
            for key, (t, peak) in res.items():
                if key[:2] == (variant, f"ours L={num_levels}"):
                    log(f"long {variant} T={length} {key[2]}: {t:.1f} ms, peak {peak:.2f} GiB")
            torch.cuda.empty_cache()
    return res


def profiled(run, repeats):
    """torch.profiler over ``repeats`` calls of ``run`` (CUDA activity), after a warm-up call
    that compiles."""
    from torch.profiler import ProfilerActivity, profile

    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
    return prof


def profile_ops(lengths, variants=("mamba2",)):
    """Where the time goes, per kernel (torch.profiler, after a warm-up call that compiles): a
    log-linear Mamba-2 fwd+bwd; a Gated DeltaNet forward (its target), then its fwd+bwd. The table
    to read before tuning."""
    for variant in variants:
        shape = MAMBA2 if variant == "mamba2" else GDN
        for length in lengths:
            batch = max(1, 32768 // length)
            xs = inputs(batch, length, **shape, num_levels=levels_for_length(length), delta=variant == "gdn", dtype=torch.bfloat16)
            leaves = [a.detach().clone().requires_grad_() for a in xs[:5]]
            beta = {} if variant == "mamba2" else {"beta": xs[5]}
            runs = [("fwd+bwd", fwd_bwd(lambda: loglinear_attention(*leaves, **beta, backend="triton")[0], leaves))]
            if variant == "gdn":
                runs.insert(0, ("fwd", lambda: loglinear_attention(*xs[:5], **beta, backend="triton")))
            for what, run in runs:
                prof = profiled(run, 3)
                log(f"profile {variant}: 3 x {what}, T={length}, B={batch}, L={levels_for_length(length)}")
                log(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30))


def decode(quick):
    """Step time vs batch and position against two floors, with bw = bytes read + written per
    second by a 1 GiB clone: reading the whole state once (ANCHORS.md's floor, state bytes / bw)
    and reading and writing it once (2 x state bytes / bw, what a step that rewrites every level
    moves)."""
    import triton

    big = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    t_copy = triton.testing.do_bench(lambda: big.clone(), return_mode="median")
    bw = 2 * big.numel() / (t_copy * 1e-3)  # bytes read + written per second
    del big
    log(f"copy bandwidth {bw / 1e12:.2f} TB/s (read+write)")
    rows = []
    heads, key_dim, value_dim, num_levels = 48, 128, 64, 15
    for batch in (1, 16, 64, 256) if not quick else (1, 64):
        for position in (1023, 65535, 1 << 20):
            state = LevelState(
                torch.randn(batch, heads, num_levels, key_dim, value_dim, device="cuda") * 0.01,
                torch.full((batch,), position, dtype=torch.int64, device="cuda"),
            )
            q, k = torch.randn(2, batch, 1, key_dim, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(batch, heads, value_dim, device="cuda", dtype=torch.bfloat16)
            g = -torch.rand(batch, heads, device="cuda")
            lam = torch.rand(batch, heads, num_levels, device="cuda")

            def step():
                loglinear_attention_step(state, q, k, v, g, lam, backend="triton")
                state.position.fill_(position)  # keep the position (and its live levels) fixed

            t = triton.testing.do_bench(step, return_mode="median")
            t_graph = graphed_time(step)
            nbytes = state.levels.numel() * 4
            floor = nbytes / bw
            rows.append((batch, position, t, t_graph, floor, nbytes / 2**20))
            log(f"decode B={batch} pos={position}: {t * 1e3:.1f} us eager, {t_graph * 1e3:.1f} us in a CUDA graph, "
                f"read-once floor {floor * 1e6:.1f} us, read+write floor {2 * floor * 1e6:.1f} us")
    return rows, bw


def graphed_time(step, steps=20):
    """Median time of one step replayed from a captured CUDA graph of ``steps`` steps (what a
    serving loop that captures its decode step pays: no Python, no launch overhead); nan if the
    capture fails."""
    import triton

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (compile) outside the capture
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(steps):
                step()
        return triton.testing.do_bench(graph.replay, return_mode="median") / steps
    except Exception as e:
        log(f"CUDA graph capture failed: {type(e).__name__}: {str(e)[:200]}")
        return float("nan")


GDN_CASES = ("dense", "packed", "init", "varlen", "segments")


def run_checks(quick, smoke=False, variants=("mamba2", "gdn"), gdn_cases=GDN_CASES):
    """The correctness checks; ``smoke`` runs them on tiny shapes (CPU, Triton's interpreter) so
    that CI exercises this script. ``gdn_cases`` picks Gated DeltaNet cases: in fp32 each compiles
    its own kernel variants for ~210 s on the device, so a call can run them in parallel processes."""
    m2, gdn = (dict(heads=4, groups=2, key_dim=16, value_dim=16), dict(heads=2, groups=2, key_dim=24, value_dim=32)) \
        if smoke else (MAMBA2, GDN)
    scale = 16 if smoke else 1  # lengths / 16 keep the same chunk-boundary crossings per 64 x 16
    if "mamba2" in variants:
        check_dense("mamba2", m2, 2048 // scale, 12)
        check_dense("mamba2", m2, 1000 // scale, 15)
        check_dense("mamba2", m2, 3000 // scale, 13, cu_seqlens=[0, 1, 700 // scale, 2049 // scale, 3000 // scale])
        check("mamba2", m2, 1024 // scale, False, 12)
        check("mamba2", m2, 700 // scale, False, 15, varlen=True)
    if "gdn" not in variants:
        return
    if "dense" in gdn_cases:
        check_dense("gdn", gdn, 1000 // scale, 12, delta=True)
    if quick:
        return
    if "packed" in gdn_cases:
        check_dense("gdn", gdn, 1500 // scale, 11, cu_seqlens=[0, 1, 700 // scale, 1500 // scale], delta=True)
    if "init" in gdn_cases:
        check("gdn", gdn, 512 // scale, True, 12)
    if "varlen" in gdn_cases:
        check("gdn", gdn, 400 // scale, True, 4, varlen=True)
    if "segments" in gdn_cases:
        check_segments(gdn, 200 if smoke else 1000, 12)


def check_segments(shape, length, num_levels):
    """The dense check and the one from an initial state with the final state, with
    ``segments.DELTA_STATE_BUDGET`` forced down to one byte, so that the input runs in training
    segments of one chunk (``kernels/segments.py``: each fresh through the Triton kernels, the
    carried level states read and handed on in torch; from the state at 200, pieces of 8, 16,
    32 tokens up to the next multiple of 64; the last chunk through torch), at a length the
    float64 reference fits."""
    from hf_loglinear.kernels import segments

    segments.DELTA_STATE_BUDGET = 1
    try:
        x = inputs(1, length, **shape, num_levels=num_levels, delta=True, dtype=torch.bfloat16)
        seg = segments.segment_length(x[0], x[2], num_levels, x[5], None, None, True, False, 64)
        check_dense(f"gdn segments of {seg}", shape, length, num_levels, delta=True)
        check(f"gdn segments of {seg}", shape, length, True, num_levels)
    finally:
        segments.DELTA_STATE_BUDGET = None


def smoke():
    """Every check on tiny shapes on CPU: what CI runs, so the GPU session finds a working script."""
    global DEVICE
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("--smoke runs the Triton kernels on CPU: set TRITON_INTERPRET=1")
    DEVICE = "cpu"
    run_checks(quick=False, smoke=True)
    if FAILED:
        print("\n".join(["CHECKS FAILED:", *FAILED]), flush=True)
        return 1
    log(f"smoke: {len(ROWS)} checks passed")
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--lengths", default="2048,8192,16384,32768,65536")
    parser.add_argument("--skip-checks", action="store_true", help="timings only (the checks were run before)")
    parser.add_argument("--smoke", action="store_true", help="the checks only, tiny shapes on CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--long", default="", help="comma-separated T for ours alone at B = 1 (e.g. 1048576), for each of --variants")
    parser.add_argument("--delta-state-budget", type=float, default=None,
                        help="GiB for segments.DELTA_STATE_BUDGET in the timings (default: half the free memory), "
                             "e.g. 1000 to time a long delta-rule input in one pass rather than in segments")
    parser.add_argument("--skip-decode", action="store_true", help="no decode-step table")
    parser.add_argument("--forward-only", action="store_true", help="time forwards only (ours, fla's, SDPA's)")
    parser.add_argument("--variants", default="mamba2,gdn", help="which of mamba2,gdn to check and time")
    parser.add_argument("--profile", default="", help="comma-separated T: per-kernel time of a Mamba-2 fwd+bwd / GDN fwd and fwd+bwd (--variants), then exit")
    parser.add_argument("--check-dtypes", default="float32,bfloat16", help="input dtypes of the checks")
    parser.add_argument("--gdn-checks", default=",".join(GDN_CASES), help="which Gated DeltaNet checks: " + ", ".join(GDN_CASES))
    parser.add_argument("--mamba2-groups", type=int, default=MAMBA2["groups"],
                        help="q/k groups of the Mamba-2 shape (1 as in ANCHORS.md; 48 gives every head its own q/k rows, "
                             "so dq / dk are stored instead of added atomically across heads)")
    args = parser.parse_args()
    MAMBA2["groups"] = args.mamba2_groups
    global CHECK_DTYPES, FORWARD_ONLY
    CHECK_DTYPES = tuple(getattr(torch, d) for d in args.check_dtypes.split(","))
    FORWARD_ONLY = args.forward_only
    if args.smoke:
        return smoke()
    import triton

    log(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    try:
        import fla

        log(f"fla {fla.__version__}")
    except ImportError:
        log("fla not importable")
    if args.delta_state_budget is not None:
        from hf_loglinear.kernels import segments

        segments.DELTA_STATE_BUDGET = int(args.delta_state_budget * 2**30)
        log(f"DELTA_STATE_BUDGET {args.delta_state_budget} GiB")
    if args.profile:
        return profile_ops([int(t) for t in args.profile.split(",")], args.variants.split(","))
    t0 = time.time()
    if not args.skip_checks:
        run_checks(args.quick, variants=args.variants.split(","), gdn_cases=args.gdn_checks.split(","))
    log(f"checks done in {time.time() - t0:.0f} s")
    if FAILED:
        print("\n".join(["CHECKS FAILED:", *FAILED]), flush=True)
        return 1
    timings = {}
    lengths = (2048, 16384, 65536) if args.quick else [int(t) for t in args.lengths.split(",") if t]
    for length in lengths:
        t0 = time.time()
        timings[length] = time_ops(length, args.quick, args.variants.split(","))
        log(f"T={length} timed in {time.time() - t0:.0f} s")
        for key, (t, peak) in timings[length].items():
            log(f"  {key}: {t:.3f} ms, peak {peak:.2f} GiB")
    if args.long:
        time_long([int(t) for t in args.long.split(",")], args.variants.split(","))
    dec = None if args.skip_decode else decode(args.quick)

    lines = ["| check | T | L | dtype | max rel. error per tensor |", "|---|---|---|---|---|", *ROWS, ""]
    keys = sorted({k for r in timings.values() for k in r})
    lines.append("| op | " + " | ".join(f"T={t} (B={max(1, 32768 // t)})" for t in timings) + " |")
    lines.append("|---" * (len(timings) + 1) + "|")
    for key in keys:
        cells = [f"{timings[t][key][0]:.2f} ms / {timings[t][key][1]:.2f} GiB" if key in timings[t] else "-" for t in timings]
        lines.append(f"| {' '.join(key)} | " + " | ".join(cells) + " |")
    if dec is not None:
        rows, bw = dec
        lines += ["", f"decode, 48 heads x 128 x 64, 15 levels, fp32 states; copy bandwidth {bw / 1e12:.2f} TB/s (read+write)",
                  "| batch | position | step (eager) | step (CUDA graph) | read-once floor | graph / read-once | "
                  "graph / read+write | state MiB |", "|---|---|---|---|---|---|---|---|"]
        for batch, position, t, tg, floor, mib in rows:
            lines.append(f"| {batch} | {position} | {t * 1e3:.1f} us | {tg * 1e3:.1f} us | {floor * 1e6:.1f} us | "
                         f"{tg * 1e-3 / floor:.2f} | {tg * 1e-3 / (2 * floor):.2f} | {mib:.0f} |")
    table = "\n".join(lines)
    print(table, flush=True)
    if args.out:
        path = os.path.join(args.out, "bench_kernels.md")
        with open(path + ".tmp", "w") as f:
            f.write(table + "\n")
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
