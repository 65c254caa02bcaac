"""Which kernel of the Gated DeltaNet Triton backward faults on the GPU, and whether tf32 is the
cause: one case per process (an illegal access poisons the CUDA context), launches blocking;
and what each launch of a fwd+bwd costs.

    CUDA_LAUNCH_BLOCKING=1 python benchmarks/debug_gdn_backward.py K V dtype [ieee]
    python benchmarks/debug_gdn_backward.py 192 384 bfloat16 sweep CONFIG [CONFIG ...]

``sweep``: for each CONFIG (launch options as ``launches.py`` takes them, ``default`` for none),
bench_kernels.py's dense check of the forward and every gradient against float64 (T = 1000,
L = 12), then the median time of each launch of a fwd+bwd at the ANCHORS.md shape (6 x 192 / 384,
B = 32768 / T) at 2K and 16K (or the lengths in $SPLIT_LENGTHS) and the fwd+bwd's total.
"""
import os
import sys
import traceback

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])

from hf_loglinear.kernels import chunk_triton
from hf_loglinear.ops import loglinear_attention

K, V, dtype = int(sys.argv[1]), int(sys.argv[2]), getattr(torch, sys.argv[3])


def fault_check():
    gen = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
    q, k = (torch.nn.functional.normalize(rand(1, 200, 2, K), dim=-1).to(dtype).requires_grad_() for _ in range(2))
    v = rand(1, 200, 2, V).to(dtype).requires_grad_()
    g = (-torch.rand(1, 200, 2, device="cuda") * 0.1).requires_grad_()
    lam = torch.rand(1, 200, 2, 8, device="cuda").requires_grad_()
    beta = torch.rand(1, 200, 2, device="cuda").requires_grad_()
    try:
        loglinear_attention(q, k, v, g, lam, beta=beta, backend="triton")[0].float().sum().backward()
        torch.cuda.synchronize()
        print("ok", sys.argv[1:], flush=True)
    except Exception as e:
        print("FAIL", sys.argv[1:], "".join(traceback.format_exception(e))[-700:], flush=True)


def sweep(configs):
    import bench_kernels as bench
    from hf_loglinear.levels import levels_for_length
    from launches import cells_line, install, per_launch

    bench.CHECK_DTYPES = (dtype,)
    shape = {**bench.GDN, "key_dim": K, "value_dim": V}
    for config in configs:
        install(config, {})
        bench.FAILED.clear()
        try:
            bench.check_dense("gdn", shape, 1000, 12, delta=True)
        except Exception:  # a launch option that does not compile (shared memory): say so, go on
            bench.FAILED.append(traceback.format_exc()[-400:])
        if bench.FAILED:
            print("FAIL", config, *bench.FAILED, flush=True)
            continue
        for length in [int(t) for t in os.environ.get("SPLIT_LENGTHS", "2048,16384").split(",")]:
            x = bench.inputs(32768 // length, length, **shape, num_levels=levels_for_length(length), delta=True, dtype=dtype)
            leaves = [a.detach().clone().requires_grad_() for a in x[:5]]
            run = bench.fwd_bwd(lambda: loglinear_attention(*leaves, beta=x[5], backend="triton")[0], leaves)
            total, cells = per_launch(run, config, repeats=5)
            print(f"gdn fwd+bwd split {config} T={length}: {cells_line(total, cells)}", flush=True)


if len(sys.argv) > 4 and sys.argv[4] == "sweep":
    sweep(sys.argv[5:])
else:
    if len(sys.argv) > 4:  # force IEEE fp32 products for half inputs too
        consts = chunk_triton._consts
        chunk_triton._consts = lambda *a: {**consts(*a), "PREC": "ieee"}
    fault_check()
