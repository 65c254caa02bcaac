"""LoRA fine-tuning throughput and memory: a 130M-shape Mamba-2 converted to log-linear (our Triton
kernels, 15 levels and 1 level) next to transformers' Mamba2ForCausalLM (its torch path), all through
``hf_loglinear.finetune.finetune`` with bf16 autocast, at 2K and 16K tokens per row.

    python benchmarks/bench_finetune.py --work /tmp/bench-ft            # one GPU: the table
    python benchmarks/bench_finetune.py --smoke                         # CPU: tiny shape, checks the script

    # Where a step's time goes (torch.profiler over the L=15 model at 2K rows, after a warm-up run):
    python benchmarks/bench_finetune.py --work /tmp/bench-ft --profile

    # Data parallel: 2 GPUs x grad_accum 1 must trace the loss curve of 1 GPU x grad_accum 2.
    python benchmarks/bench_finetune.py --work /tmp/bench-ft --ddp-reference
    torchrun --nproc_per_node 2 benchmarks/bench_finetune.py --work /tmp/bench-ft --ddp

Weights are random (seeded): the shape, not the checkpoint, sets the cost. Each table entry runs in
a subprocess of its own so that its peak memory (``torch.cuda.max_memory_allocated``) is its own.
Throughput counts input tokens per second over the steps after ``--warmup`` (Triton compiles and
autotunes in the first steps). peft refuses LoRA on ``out_proj`` of transformers' Mamba-2, so that
model trains LoRA on ``in_proj`` only; ours use the default targets (in_proj, out_proj, level_proj
and the level-weight tables).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

SHAPE_130M = dict(hidden_size=768, num_hidden_layers=24, state_size=128, head_dim=64, num_heads=24, expand=2,
                  n_groups=1, vocab_size=50280, conv_kernel=4, chunk_size=256, tie_word_embeddings=True)
SHAPE_SMOKE = dict(hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16, num_heads=8, expand=2,
                   n_groups=1, vocab_size=257, conv_kernel=4, chunk_size=16, tie_word_embeddings=True)
VARIANTS = {  # name -> (model folder, LoRA targets or None for the family defaults)
    "log-linear Mamba-2, L=15 (ours)": ("loglinear-L15", None),
    "log-linear Mamba-2, L=1 (ours)": ("loglinear-L1", None),
    "transformers Mamba2 (torch path)": ("mamba2", ["in_proj"]),
}


def build_models(work: Path, shape: dict) -> None:
    """The seeded random transformers Mamba-2 and its conversions at 15 and 1 levels (kept if present)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from hf_loglinear.conversion import convert

    source = work / "mamba2"
    if not (source / "config.json").is_file():
        torch.manual_seed(0)
        Mamba2ForCausalLM(Mamba2Config(**shape)).save_pretrained(source)
    for levels in (15, 1):
        target = work / f"loglinear-L{levels}"
        if not (target / "config.json").is_file():
            convert(source, target, num_levels=levels, verify=False, overwrite=True, progress=False)


def random_rows(vocab: int, row_tokens: int, rows: int, seed: int = 0, distinct: int | None = None):
    """``rows`` rows of random tokens, one document per row; with ``distinct`` the rows repeat a pool
    of that many sequences, which the model can learn (a loss curve that moves)."""
    from hf_loglinear.data import pack_documents

    gen = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, vocab, (distinct or rows, row_tokens), generator=gen)
    documents = pool[torch.arange(rows) % pool.shape[0]].tolist()
    return pack_documents(documents, max_length=row_tokens)


def run_one(spec: dict) -> dict:
    """One fine-tuning run; tokens/s over the steps after the warm-up, and the peak memory."""
    from hf_loglinear.finetune import finetune

    rows_per_step = max(1, spec["tokens_per_step"] // spec["row_tokens"])
    data = random_rows(spec["vocab"], spec["row_tokens"], rows_per_step * spec["steps"])
    out = Path(spec["out"])
    shutil.rmtree(out, ignore_errors=True)
    summary = finetune(
        spec["model"], data, out, target_modules=spec["targets"], steps=spec["steps"], max_length=spec["row_tokens"],
        batch_size=rows_per_step, eval_fraction=0.0, gradient_checkpointing=spec["gradient_checkpointing"],
        bf16=spec["bf16"], lr=1e-4, dropout=0.0, progress=False,
    )
    timed = summary["history"][spec["warmup"]:]
    seconds = sum(rows_per_step * spec["row_tokens"] / h["tokens_per_s"] for h in timed)
    return {
        "tokens_per_s": len(timed) * rows_per_step * spec["row_tokens"] / seconds,
        "step_ms": 1000 * seconds / len(timed),
        "peak_gib": summary["peak_memory_bytes"] / 2**30 if summary["peak_memory_bytes"] else None,
        "final_loss": summary["final_loss"],
    }


def run_isolated(spec: dict) -> dict:
    """``run_one`` in a fresh process: its own peak memory, and an OOM or crash does not end the table."""
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if "out of memory" in proc.stderr.lower():
        return {"error": "out of memory"}
    tail = proc.stderr.strip().splitlines()
    return {"error": tail[-1] if tail else f"exit status {proc.returncode}"}


def table(args, work: Path, shape: dict, lengths) -> list[dict]:
    results = []
    for row_tokens in lengths:
        for name, (folder, targets) in VARIANTS.items():
            spec = dict(model=str(work / folder), targets=targets, row_tokens=row_tokens,
                        tokens_per_step=max(args.tokens_per_step, row_tokens), steps=args.steps, warmup=args.warmup,
                        vocab=shape["vocab_size"], bf16=not args.smoke, out=str(work / "runs" / f"{folder}-{row_tokens}"),
                        gradient_checkpointing=args.gradient_checkpointing)
            result = run_isolated(spec)
            results.append(dict(variant=name, row_tokens=row_tokens, rows_per_step=spec["tokens_per_step"] // row_tokens,
                                **result))
            print(json.dumps(results[-1]), flush=True)
    return results


def print_table(results: list[dict], header: str):
    print(f"\n{header}\n")
    print("| model | tokens/row | rows/step | tokens/s | ms/step | peak GiB | final loss |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['variant']} | {r['row_tokens']} | {r['rows_per_step']} | {r['error']} | | | |")
            continue
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {r['variant']} | {r['row_tokens']} | {r['rows_per_step']} | {r['tokens_per_s']:,.0f} | "
              f"{r['step_ms']:.1f} | {peak} | {r['final_loss']:.4f} |")


def profile_steps(args, work: Path, shape: dict):
    """Profile one short run of the L=15 model (its kernels compiled by a run before it): GPU busy
    time against wall time, host synchronisations, and the ops that take the time."""
    from torch.profiler import ProfilerActivity, profile

    build_models(work, shape)
    spec = dict(model=str(work / "loglinear-L15"), targets=None, row_tokens=2048, tokens_per_step=args.tokens_per_step,
                steps=4, warmup=1, vocab=shape["vocab_size"], bf16=True, out=str(work / "runs" / "profile"),
                gradient_checkpointing=args.gradient_checkpointing)
    run_one(spec)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        result = run_one(spec)
    events = prof.key_averages()
    device_us = sum(e.self_device_time_total for e in events)
    syncs = {e.key: e.count for e in events if e.key in ("aten::_local_scalar_dense", "cudaStreamSynchronize",
                                                          "cudaDeviceSynchronize", "cudaMemcpyAsync")}
    print(events.table(sort_by="self_device_time_total", row_limit=25), flush=True)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15), flush=True)
    print(f"{spec['steps']} steps of {args.tokens_per_step} tokens: {result['step_ms']:.1f} ms/step after warm-up; "
          f"GPU busy {device_us / 1e3:.0f} ms in the whole profiled run (model load included); host syncs {syncs}")


def ddp_run(args, work: Path, shape: dict, reference: bool):
    """The L=15 model on 2K rows: 1 process x grad_accum 2 (reference) or N processes x grad_accum 1."""
    from accelerate import PartialState

    from hf_loglinear.finetune import finetune

    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():
        if state.is_main_process:
            build_models(work, shape)
    grad_accum = 2 if reference else 1
    if not reference and state.num_processes != 2:
        raise SystemExit("--ddp compares 2 processes with the reference: run it under torchrun --nproc_per_node 2")
    row_tokens = 256 if args.smoke else 2048
    out = work / "runs" / ("ddp-reference" if reference else "ddp")
    reference_file = work / f"ddp_reference{'_fp32' if args.fp32 else ''}.json"
    if state.is_main_process:
        shutil.rmtree(out, ignore_errors=True)
    state.wait_for_everyone()
    summary = finetune(
        work / "loglinear-L15", random_rows(shape["vocab_size"], row_tokens, 4 * args.steps, seed=1, distinct=8), out,
        steps=args.steps, max_length=row_tokens, batch_size=2, grad_accum=grad_accum, eval_fraction=0.0,
        dropout=0.0, lr=1e-3, bf16=not (args.smoke or args.fp32), progress=state.is_main_process,
    )
    if not state.is_main_process:
        return
    losses = [h["loss"] for h in summary["history"]]
    if reference:
        reference_file.write_text(json.dumps(losses))
        print(f"reference (1 process x grad_accum 2): losses {losses[0]:.4f} -> {losses[-1]:.4f}")
        return
    expected = json.loads(reference_file.read_text())
    diff = max(abs(a - b) for a, b in zip(losses, expected))
    print(f"2 processes x grad_accum 1: losses {losses[0]:.4f} -> {losses[-1]:.4f}; "
          f"max |loss - reference| over {len(losses)} steps = {diff:.2e}")
    print("step losses, reference:", " ".join(f"{x:.4f}" for x in expected))
    print("step losses, 2 processes:", " ".join(f"{x:.4f}" for x in losses))
    print(f"tokens/s (all processes): {statistics.mean(h['tokens_per_s'] for h in summary['history'][args.warmup:]):,.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench-finetune"), help="models, runs and results go here")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="tokens per row (default 2048 16384)")
    parser.add_argument("--tokens-per-step", type=int, default=16384, help="tokens per optimizer step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the throughput")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shape, a few steps")
    parser.add_argument("--fp32", action="store_true", help="DDP runs without bf16 autocast")
    parser.add_argument("--profile", action="store_true", help="where a step's time goes (torch.profiler)")
    parser.add_argument("--ddp", action="store_true", help="the 2-process run (under torchrun)")
    parser.add_argument("--ddp-reference", action="store_true", help="the 1-process run it is compared with")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one table entry, as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.smoke:
        args.steps, args.warmup, args.tokens_per_step = min(args.steps, 4), min(args.warmup, 1), 512
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU; use --smoke to check it on CPU")
    shape = SHAPE_SMOKE if args.smoke else SHAPE_130M
    args.work.mkdir(parents=True, exist_ok=True)
    if args.ddp or args.ddp_reference:
        ddp_run(args, args.work, shape, reference=args.ddp_reference)
        return
    if args.profile:
        profile_steps(args, args.work, shape)
        return
    build_models(args.work, shape)
    lengths = args.lengths or ([64, 256] if args.smoke else [2048, 16384])
    results = table(args, args.work, shape, lengths)
    (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    device = "CPU (smoke; our torch chunked form)" if args.smoke else f"{torch.cuda.get_device_name()} (our Triton kernels)"
    fast = [m for m in ("mamba_ssm", "causal_conv1d", "kernels") if importlib.util.find_spec(m)]
    print_table(results, f"LoRA fine-tuning, {shape['num_hidden_layers']} layers x {shape['hidden_size']} "
                         f"(state {shape['state_size']}), {args.tokens_per_step} tokens/step, bf16 autocast: {not args.smoke}, "
                         f"{device}, torch {torch.__version__}; importable fast Mamba-2 paths for transformers: {fast or 'none'}")


if __name__ == "__main__":
    main()
