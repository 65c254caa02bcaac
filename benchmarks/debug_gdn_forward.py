"""Whether the Gated DeltaNet forward faults on the GPU at a head size, and with how many
pipeline stages in its level scan: one case per process (an illegal access poisons the CUDA
context), launches blocking.

    CUDA_LAUNCH_BLOCKING=1 python benchmarks/debug_gdn_forward.py K V dtype [stages]
"""
import sys
import traceback

import torch

from hf_loglinear.kernels import chunk_triton
from hf_loglinear.ops import loglinear_attention

K, V, dtype = int(sys.argv[1]), int(sys.argv[2]), getattr(torch, sys.argv[3])
if len(sys.argv) > 4:
    tiles = chunk_triton._scan_tiles
    chunk_triton._scan_tiles = lambda *a: (tiles(*a)[0], {**tiles(*a)[1], "num_stages": int(sys.argv[4])})
gen = torch.Generator(device="cuda").manual_seed(0)
rand = lambda *s: torch.randn(*s, device="cuda", generator=gen)  # noqa: E731
q, k = (torch.nn.functional.normalize(rand(1, 1000, 2, K), dim=-1).to(dtype) for _ in range(2))
v = rand(1, 1000, 2, V).to(dtype)
g = -torch.rand(1, 1000, 2, device="cuda") * 0.1
lam = torch.rand(1, 1000, 2, 12, device="cuda")
beta = torch.rand(1, 1000, 2, device="cuda")
try:
    o = loglinear_attention(q, k, v, g, lam, beta=beta, backend="triton")[0]
    ref = loglinear_attention(q.double(), k.double(), v.double(), g.double(), lam.double(), beta=beta.double(), backend="torch")[0]
    err = ((o.double() - ref).abs().max() / ref.abs().max()).item()
    print("ok", sys.argv[1:], f"o rel. error {err:.1e}", flush=True)
except Exception:
    print("FAIL", sys.argv[1:], traceback.format_exc()[-600:], flush=True)
