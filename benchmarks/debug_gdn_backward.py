"""Which kernel of the Gated DeltaNet Triton backward faults on the GPU, and whether tf32 is the
cause: one case per process (an illegal access poisons the CUDA context), launches blocking.

    CUDA_LAUNCH_BLOCKING=1 python benchmarks/debug_gdn_backward.py K V dtype [ieee]
"""
import sys
import traceback

import torch

from hf_loglinear.kernels import chunk_triton
from hf_loglinear.ops import loglinear_attention

K, V, dtype = int(sys.argv[1]), int(sys.argv[2]), getattr(torch, sys.argv[3])
if len(sys.argv) > 4:  # force IEEE fp32 products for half inputs too
    consts = chunk_triton._consts
    chunk_triton._consts = lambda *a: {**consts(*a), "PREC": "ieee"}
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
