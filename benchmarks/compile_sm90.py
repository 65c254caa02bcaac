"""Compile every Triton kernel for an H100/H200 (sm_90) on a machine without a GPU.

    python benchmarks/compile_sm90.py [--dtypes bfloat16,float32]

The interpreter (TRITON_INTERPRET=1, what the tests use) runs the kernels' Python, not their
compilation: a type error of the compiler, or a kernel asking for more shared memory than the
GPU has (227 KB per block on sm_90), shows up only on a GPU. This script runs the real wrappers on
CPU tensors with every launch replaced by a compile for sm_90 (nothing executes; results are
garbage), at the ANCHORS.md head sizes and at the largest and smallest the kernels support, and
prints each kernel's shared memory, registers per thread and local-memory stack (spills: 255
registers and a stack mean the kernel spills; from ``cuobjdump --dump-resource-usage`` on its
cubin). It exits 1 when a kernel does not fit the shared memory. CI runs it in bf16 (about 70 s
cold, 25 s warm).
A kernel that compiles and fits can still fault on the GPU (gpu_notes.md, version 5).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret

import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

SHARED_LIMIT = 232448  # bytes per block on sm_90 (227 KB)
# The ANCHORS.md head sizes, then the largest and smallest issue 6 asks for (Mamba-2 state 64 / 128,
# head dim 32 .. 128; Gated DeltaNet key 64 .. 256, value up to 512).
SHAPES = {
    "mamba2": dict(G=1, H=4, K=128, V=64, delta=False), "gdn": dict(G=2, H=2, K=192, V=384, delta=True),
    "mamba2-max": dict(G=1, H=2, K=128, V=128, delta=False), "mamba2-min": dict(G=1, H=2, K=64, V=32, delta=False),
    "gdn-max": dict(G=1, H=2, K=256, V=512, delta=True), "gdn-min": dict(G=1, H=2, K=64, V=64, delta=True),
}


class _Sm90Driver:
    """The active driver, except that it names sm_90 as the target and needs no device."""

    def __init__(self, real):
        self.real = real

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")

    def __getattr__(self, name):
        return getattr(self.real, name)


def compile_instead_of_launching(record):
    """Make every ``kernel[grid](...)`` compile for sm_90 and record (kernel, shared bytes)."""
    try:
        real = driver.active
    except RuntimeError:  # no GPU driver at all: only the target matters here
        real = None
    driver.set_active(_Sm90Driver(real))
    run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        record.append((self.__name__, kernel.metadata.shared, *resource_usage(kernel.asm["cubin"])))
        return kernel

    JITFunction.run = compile_only


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes) of a compiled kernel, read with the cuobjdump Triton
    ships; (-1, -1) where it cannot say."""
    import triton.backends.nvidia as nvidia

    tool = os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        except OSError:
            return -1, -1
    found = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else (-1, -1)


def _inputs(length, G, H, K, V, delta, dtype, num_levels=12):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, length, G, K, generator=gen).to(dtype) for _ in range(2))
    v = torch.randn(1, length, H, V, generator=gen).to(dtype)
    g = -torch.rand(1, length, H, generator=gen) * 0.1
    lam = torch.rand(1, length, H, num_levels, generator=gen)
    beta = torch.rand(1, length, H, generator=gen) if delta else None
    return [q, k, v, g, lam, beta]


def exercise(variant, dtype, record):
    """Launch (= compile) what ``variant`` launches; returns the forward's and step's kernels, then
    the training backward's."""
    from hf_loglinear.kernels.chunk_triton import chunk_loglinear_attention_triton
    from hf_loglinear.kernels.step_triton import step_loglinear_attention_triton
    from hf_loglinear.ops import LevelState

    s = SHAPES[variant]
    G, H, K, V, delta = s["G"], s["H"], s["K"], s["V"], s["delta"]
    x = _inputs(200, G, H, K, V, delta, dtype)
    cu = torch.tensor([0, 70, 200])
    chunk_loglinear_attention_triton(*x[:5], beta=x[5])
    init = LevelState(torch.zeros(2, H, 12, K, V), torch.tensor([5000, 77]))
    chunk_loglinear_attention_triton(*x[:5], beta=x[5], cu_seqlens=cu, initial_state=init, output_final_state=True)
    state = LevelState(torch.zeros(2, H, 12, K, V), torch.tensor([0, 1 << 20]))
    step = [torch.zeros(2, G, K, dtype=dtype), torch.zeros(2, G, K, dtype=dtype), torch.zeros(2, H, V, dtype=dtype),
            torch.zeros(2, H), torch.zeros(2, H, 12)]
    step_loglinear_attention_triton(state, *step, beta=torch.zeros(2, H) if delta else None)
    default = len(record)
    for kw in ({}, {"cu_seqlens": cu}):  # the training backward, dense and packed
        leaves = [a if a is None else a.clone().requires_grad_() for a in x]
        chunk_loglinear_attention_triton(*leaves[:5], beta=leaves[5], **kw)[0].float().sum().backward()
    return record[:default], record[default:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="bfloat16,float32", help="input dtypes, comma-separated")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="which of " + ", ".join(SHAPES) + ", comma-separated")
    args = parser.parse_args()
    failed = []
    print("| variant | inputs | path | kernel | shared KB | fits sm_90 (227 KB) | registers | stack B |\n"
          "|---|---|---|---|---|---|---|---|")
    for variant in args.shapes.split(","):
        for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
            record = []
            compile_instead_of_launching(record)
            forward, backward = exercise(variant, dtype, record)
            for path, kernels in (("forward + step", forward), ("training", backward)):
                for name, shared, regs, stack in sorted(set(kernels)):
                    fits = shared <= SHARED_LIMIT
                    if not fits:
                        failed.append(f"{variant} {dtype} {name}: {shared} bytes of shared memory")
                    print(f"| {variant} K={SHAPES[variant]['K']} V={SHAPES[variant]['V']} | {str(dtype)[6:]} | {path} | "
                          f"{name} | {shared / 1024:.0f} | {'yes' if fits else 'NO'} | {regs} | {stack} |", flush=True)
    if failed:
        print("\n".join(["does not fit an H100/H200:", *failed]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
