"""LoRA fine-tuning of log-linear models (peft + accelerate).

    from hf_loglinear.finetune import finetune
    summary = finetune("out/mamba2-130m-loglinear", "corpus.jsonl", "out/ft", rank=16, steps=1000)

A converted model starts as the linear original; fine-tuning is where it learns to use its levels.
LoRA goes on the family's projections (``DEFAULT_TARGETS``), and the per-(head, level) scale and
bias of every ``level_weights`` submodule train in full and are saved with the adapter
(``modules_to_save``). Documents are packed into rows with ``cu_seqlens`` (``data.py``), so each
document starts from empty levels.

The output folder holds ``adapter/`` (peft ``save_pretrained`` plus the tokenizer), ``merged/``
with ``merge=True`` (a full model with its remote code, loadable without peft),
``checkpoints/step-N/`` every ``save_every`` steps (trainable weights, optimizer, scheduler, RNG),
and ``finetune.json`` (the summary this function returns).

The same code runs data-parallel: accelerate shards the batches and syncs the gradients. Process p of
P takes micro-batches p, p + P, ..., so P processes with ``grad_accum`` g see the same global batches
as one process with ``grad_accum`` P * g (and trace the same loss curve).

    torchrun --nproc_per_node 8 -m hf_loglinear.finetune MODEL DATA OUT [options]          # DDP
    accelerate launch --use_fsdp --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP \
        --fsdp_use_orig_params true -m hf_loglinear.finetune MODEL DATA OUT [options]       # FSDP

(FSDP with peft needs ``use_orig_params``: frozen and trainable tensors share the flat shards.)
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import GradientAccumulationPlugin, set_seed
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

from .data import IGNORE_INDEX, PackedRows, build_datasets, collate_packed, split_rows

__all__ = ["DEFAULT_TARGETS", "finetune", "finetune_arguments", "load_model", "lora_model", "merge_adapter", "run_finetune"]

# LoRA targets per model family: every Linear of the token mixer, and the level projection.
DEFAULT_TARGETS = {
    "loglinear_mamba2": ["in_proj", "out_proj", "level_proj"],
    "loglinear_gated_deltanet": ["q_proj", "k_proj", "v_proj", "g_proj", "o_proj", "level_proj"],
}
LEVEL_WEIGHTS = "level_weights"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


# --------------------------------------------------------------------------- model and adapter
def load_model(path, *, dtype: str = "float32", trust_remote_code: bool = False):
    """A causal LM from a folder (ours, a converted one, or any with ``trust_remote_code``) or hub id.

    With ``hf_loglinear`` imported our model types resolve to the package's classes; other folders
    with an ``auto_map`` need ``trust_remote_code``.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)


def lora_model(model, *, rank: int = 16, alpha: float = 32.0, dropout: float = 0.05, target_modules=None) -> PeftModel:
    """Wrap ``model`` with LoRA on ``target_modules`` (default: ``DEFAULT_TARGETS`` of its family)
    and train its ``level_weights`` submodules in full."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    model_type = model.config.model_type
    if target_modules is None:
        if model_type not in DEFAULT_TARGETS:
            raise ValueError(
                f"no default LoRA targets for model_type {model_type!r} (defaults exist for {sorted(DEFAULT_TARGETS)}; "
                "convert the checkpoint first with `hf-loglinear convert`, or pass target_modules)"
            )
        target_modules = DEFAULT_TARGETS[model_type]
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = sorted(set(target_modules) - linear_names)
    if missing:
        raise ValueError(f"LoRA targets {missing} name no Linear module of this {model_type} model")
    has_levels = any(name.rsplit(".", 1)[-1] == LEVEL_WEIGHTS for name, _ in model.named_modules())
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        modules_to_save=[LEVEL_WEIGHTS] if has_levels else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def merge_adapter(adapter_dir, dst, *, dtype: str = "auto", trust_remote_code: bool = False) -> Path:
    """Base model + adapter -> one full model folder (with its remote code and the tokenizer)."""
    adapter_dir, dst = Path(adapter_dir), Path(dst)
    base_path = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = load_model(base_path, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    with _atomic_dir(dst) as tmp:
        merged.save_pretrained(tmp)
        _copy_tokenizer(adapter_dir, tmp)
    return dst


# --------------------------------------------------------------------------- the training run
def finetune(
    model,
    data,
    out,
    *,
    rank: int = 16,
    alpha: float = 32.0,
    dropout: float = 0.05,
    target_modules=None,
    lr: float = 2e-4,
    weight_decay: float = 0.0,
    scheduler: str = "cosine",
    warmup_steps: int = 0,
    steps: int | None = None,
    epochs: float = 1.0,
    max_length: int = 2048,
    batch_size: int = 1,
    grad_accum: int = 1,
    max_grad_norm: float | None = 1.0,
    eval_fraction: float = 0.01,
    eval_every: int | None = None,
    gradient_checkpointing: bool = False,
    bf16: bool | None = None,
    dtype: str = "float32",
    save_every: int | None = None,
    resume: bool | str = False,
    merge: bool = False,
    seed: int = 0,
    text_field: str = "text",
    tokenizer=None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict:
    """LoRA-fine-tune the causal LM at ``model`` (a folder or hub id) on ``data`` (a path read by
    ``data.read_documents``, or ready ``PackedRows``) and write the results under ``out``.

    ``steps`` optimizer steps (each ``batch_size`` rows x ``grad_accum`` x processes), or ``epochs``
    passes over the training rows when ``steps`` is None. ``bf16`` None means autocast to bfloat16
    when CUDA supports it. ``resume`` True continues from the latest checkpoint in ``out`` (if any),
    a path from that checkpoint. Returns the summary also written to ``out/finetune.json``.
    """
    _check_arguments(steps, epochs, batch_size, grad_accum, lr, save_every, eval_every, warmup_steps)
    out = Path(out)
    checkpoint = _checkpoint_to_resume(out, resume)
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # also makes torchrun on a CPU machine run DDP over gloo
        mixed_precision="bf16" if bf16 else "no",
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=grad_accum, sync_with_dataloader=False),
    )
    set_seed(seed)

    base = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if isinstance(data, PackedRows):
        train_rows, eval_rows = split_rows(data, eval_fraction)
    else:
        tokenizer = tokenizer if tokenizer is not None else _model_tokenizer(model, trust_remote_code)
        train_rows, eval_rows = build_datasets(
            data, tokenizer, max_length=max_length, text_field=text_field, eval_fraction=eval_fraction, seed=seed
        )
    if gradient_checkpointing:  # transformers >= 5.24 renames it activation checkpointing
        enable = getattr(base, "activation_checkpointing_enable", base.gradient_checkpointing_enable)
        enable({"use_reentrant": False})
    peft_model = lora_model(base, rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
    if Path(str(model)).is_dir():  # so that the adapter finds its base from any working directory
        peft_model.peft_config["default"].base_model_name_or_path = str(Path(model).resolve())
    packed_forward = "cu_seqlens" in inspect.signature(base.forward).parameters

    train_loader, eval_loader = _loaders(train_rows, eval_rows, batch_size, seed, packed_forward)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    peft_model, optimizer, train_loader = accelerator.prepare(peft_model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    per_epoch = len(train_loader)  # micro-batches per process and epoch
    total_steps = steps if steps is not None else max(1, math.ceil(epochs * per_epoch / grad_accum))
    # Stepped once per optimizer step by us (accelerate would step it once per process).
    lr_schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    run = RunState(
        step=0,
        settings=dict(row_tokens=train_rows.input_ids.shape[1], batch_size=batch_size, grad_accum=grad_accum, seed=seed,
                      processes=accelerator.num_processes, rows=len(train_rows), total_steps=total_steps),
    )
    accelerator.register_for_checkpointing(lr_schedule, run)
    _save_only_trainable(accelerator)
    if checkpoint is not None:
        settings = dict(run.settings)
        accelerator.load_state(str(checkpoint))
        if run.settings != settings:
            raise ValueError(f"cannot resume from {checkpoint}: it was written with {run.settings}, this run has {settings}")
        accelerator.print(f"resumed from {checkpoint} at step {run.step}")

    history, evals = _train(
        accelerator, peft_model, optimizer, lr_schedule, train_loader, eval_loader, run, out,
        total_steps=total_steps, per_epoch=per_epoch, grad_accum=grad_accum, max_grad_norm=max_grad_norm,
        eval_every=eval_every, save_every=save_every, progress=progress,
    )

    adapter_dir, merged_dir = out / "adapter", None
    state_dict = accelerator.get_state_dict(peft_model)  # gathers FSDP shards
    if accelerator.is_main_process:
        with _atomic_dir(adapter_dir) as tmp:
            accelerator.unwrap_model(peft_model).save_pretrained(tmp, state_dict=state_dict)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        if merge:
            merged_dir = merge_adapter(adapter_dir, out / "merged", dtype=dtype, trust_remote_code=trust_remote_code)
    accelerator.wait_for_everyone()
    summary = _summary(accelerator, peft_model, history, evals, adapter_dir, merged_dir, total_steps)
    if accelerator.is_main_process:
        _write_json(out / "finetune.json", summary)
    return summary


def _model_tokenizer(model, trust_remote_code: bool):
    try:
        return AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ValueError(f"no tokenizer could be loaded from {model} ({exc}); pass one (--tokenizer)") from None


def _loaders(train_rows, eval_rows, batch_size: int, seed: int, packed_forward: bool):
    collate = collate_packed if packed_forward else _collate_rows
    # A generator of its own: creating an iterator would otherwise draw from the global RNG, and a
    # resumed run (which restores that RNG) would see other dropout masks than an uninterrupted one.
    train_loader = DataLoader(train_rows, batch_size=batch_size, sampler=EpochShuffle(len(train_rows), seed),
                              collate_fn=collate, drop_last=True, generator=torch.Generator().manual_seed(seed))
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_rows)} training row(s) cannot fill one batch of {batch_size}; lower --batch-size")
    # One row per eval batch: gather_for_metrics drops the rows accelerate repeats to even out the
    # processes by counting samples, so every gathered entry must be one row.
    eval_loader = DataLoader(eval_rows, batch_size=1, collate_fn=collate) if eval_rows is not None else None
    return train_loader, eval_loader


class EpochShuffle(Sampler):
    """A seeded permutation per epoch: a resumed run sees the rows in the same order."""

    def __init__(self, num_rows: int, seed: int):
        self.num_rows, self.seed, self.epoch = num_rows, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return self.num_rows

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_rows, generator=generator).tolist())


class RunState:
    """The step counter and the settings a checkpoint must be resumed with."""

    def __init__(self, step: int, settings: dict):
        self.step, self.settings = step, settings

    def state_dict(self):
        return {"step": self.step, "settings": self.settings}

    def load_state_dict(self, state):
        self.step, self.settings = state["step"], state["settings"]


def _train(accelerator, model, optimizer, lr_schedule, train_loader, eval_loader, run, out, *, total_steps,
           per_epoch, grad_accum, max_grad_norm, eval_every, save_every, progress):
    """The optimisation loop; returns the per-step train history and the evals."""
    history, evals = [], []
    bar = tqdm(total=total_steps, initial=run.step, disable=not (progress and accelerator.is_main_process),
               desc="fine-tuning", unit="step", dynamic_ncols=True)
    micro = run.step * grad_accum  # micro-batches each process has consumed
    window_loss, window_tokens, started = 0.0, 0, time.perf_counter()
    model.train()
    while run.step < total_steps:
        epoch, skip = divmod(micro, per_epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch, use_cache=False).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
            window_loss += loss.detach()
            window_tokens += batch["input_ids"].numel() * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            lr_schedule.step()
            run.step += 1
            step_loss = accelerator.reduce(window_loss / grad_accum, reduction="mean").item()
            rate = window_tokens / (time.perf_counter() - started)
            history.append({"step": run.step, "loss": step_loss, "lr": lr_schedule.get_last_lr()[0], "tokens_per_s": rate})
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{rate:,.0f}")
            if eval_loader is not None and eval_every and run.step % eval_every == 0 and run.step < total_steps:
                evals.append(_evaluate(accelerator, model, eval_loader, run.step))
                bar.write(f"step {run.step}: eval loss {evals[-1]['loss']:.4f}, perplexity {evals[-1]['perplexity']:.2f}")
            if save_every and run.step % save_every == 0 and run.step < total_steps:
                _save_checkpoint(accelerator, out, run.step)
            window_loss, window_tokens, started = 0.0, 0, time.perf_counter()
            if run.step >= total_steps:
                break
    bar.close()
    if eval_loader is not None:
        evals.append(_evaluate(accelerator, model, eval_loader, run.step))
        accelerator.print(f"eval loss {evals[-1]['loss']:.4f}, perplexity {evals[-1]['perplexity']:.2f}")
    return history, evals


@torch.no_grad()
def _evaluate(accelerator, model, loader, step) -> dict:
    """Token-weighted mean loss over the eval rows of all processes, and its perplexity."""
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        targets = (batch["labels"][..., 1:] != IGNORE_INDEX).sum()
        loss = model(**batch, use_cache=False).loss
        totals += accelerator.gather_for_metrics(torch.stack([loss.double() * targets, targets.double()])[None]).sum(0)
    model.train()
    mean = (totals[0] / totals[1]).item()
    return {"step": step, "loss": mean, "perplexity": math.exp(min(mean, 700.0))}


# --------------------------------------------------------------------------- checkpoints
def _save_only_trainable(accelerator):
    """Checkpoints hold the trainable tensors only (the frozen base is the model folder itself).
    FSDP checkpoints bypass these hooks: accelerate saves and loads the sharded model there."""

    def trainable(model):
        return {name for name, p in model.named_parameters() if p.requires_grad}

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models):
            keep = trainable(model)
            weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            state = load_file(os.path.join(input_dir, "model.safetensors" if i == 0 else f"model_{i}.safetensors"))
            missing = trainable(model) - set(state)
            if missing:
                raise ValueError(f"checkpoint {input_dir} lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
            model.load_state_dict(state, strict=False)
        models.clear()  # loaded here; accelerate must not load them again

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _save_checkpoint(accelerator, out: Path, step: int):
    final = out / "checkpoints" / f"step-{step:07d}"
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    accelerator.wait_for_everyone()


def _checkpoint_to_resume(out: Path, resume) -> Path | None:
    if resume and not isinstance(resume, bool):
        path = Path(resume)
        if not (path / "custom_checkpoint_0.pkl").is_file():
            raise ValueError(f"{resume} is not a checkpoint written by finetune (expected checkpoints/step-N)")
        return path
    found = sorted((out / "checkpoints").glob("step-*")) if out.is_dir() else []
    if resume:
        return found[-1] if found else None
    if found or (out / "adapter").exists():
        raise ValueError(f"{out} already holds a fine-tuning run; pass --resume to continue it or choose another folder")
    return None


# --------------------------------------------------------------------------- helpers
def _check_arguments(steps, epochs, batch_size, grad_accum, lr, save_every, eval_every, warmup_steps):
    for name, value in (("batch_size", batch_size), ("grad_accum", grad_accum)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    for name, value in (("steps", steps), ("save_every", save_every), ("eval_every", eval_every)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 (or None), got {value}")
    if steps is None and not epochs > 0:
        raise ValueError(f"epochs must be > 0 when steps is not given, got {epochs}")
    if not lr > 0 or warmup_steps < 0:
        raise ValueError(f"lr must be > 0 and warmup_steps >= 0, got {lr}, {warmup_steps}")


def _collate_rows(rows: list[dict]) -> dict:
    """For models without ``cu_seqlens``: [B, T] rows, allowed only when no row packs two pieces."""
    if any(row["cu_seqlens"].numel() > 2 for row in rows):
        raise ValueError("this model takes no cu_seqlens, so packed documents would see each other; use one document per row")
    return {"input_ids": torch.stack([r["input_ids"] for r in rows]), "labels": torch.stack([r["labels"] for r in rows])}


def _summary(accelerator, model, history, evals, adapter_dir, merged_dir, total_steps) -> dict:
    unwrapped = accelerator.unwrap_model(model)
    cuda = accelerator.device.type == "cuda"
    tail = history[-max(1, len(history) // 10):]
    return {
        "steps": total_steps,
        "processes": accelerator.num_processes,
        "trainable_parameters": sum(p.numel() for p in unwrapped.parameters() if p.requires_grad),
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "tokens_per_s": sum(h["tokens_per_s"] for h in tail) / len(tail) if tail else None,
        "eval_loss": evals[-1]["loss"] if evals else None,
        "eval_perplexity": evals[-1]["perplexity"] if evals else None,
        "peak_memory_bytes": torch.cuda.max_memory_allocated(accelerator.device) if cuda else None,
        "adapter": str(adapter_dir),
        "merged": str(merged_dir) if merged_dir else None,
        "history": history,
        "evals": evals,
    }


class _atomic_dir:
    """Write a folder under a temporary name and rename it into place when complete."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.tmp = self.final.with_name(f".{self.final.name}.tmp")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, kind, value, traceback):
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        shutil.rmtree(self.final, ignore_errors=True)
        self.tmp.rename(self.final)
        return False


def _copy_tokenizer(src: Path, dst: Path):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                 "tokenizer.model", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def _write_json(path: Path, payload: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- command line
DESCRIPTION = "LoRA fine-tuning with packed documents; runs data-parallel under torchrun / accelerate launch."


def finetune_arguments(p: argparse.ArgumentParser):
    """The options of ``hf-loglinear finetune MODEL DATA OUT`` (and of ``python -m hf_loglinear.finetune``)."""
    p.add_argument("model", help="model folder (ours or converted) or hub id")
    p.add_argument("data", help="a .txt / .jsonl / .json file, a folder of them, or a dataset saved with save_to_disk")
    p.add_argument("out", help="output folder: adapter/, merged/, checkpoints/, finetune.json")
    lora = p.add_argument_group("LoRA")
    lora.add_argument("--rank", type=int, default=16)
    lora.add_argument("--alpha", type=float, default=32.0)
    lora.add_argument("--dropout", type=float, default=0.05)
    lora.add_argument("--target-modules", nargs="+", default=None, help="default: the model family's projections")
    train = p.add_argument_group("training")
    train.add_argument("--lr", type=float, default=2e-4)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--scheduler", default="cosine", help="a transformers scheduler name (cosine, linear, constant, ...)")
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs over the data)")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--max-length", type=int, default=2048, help="tokens per packed row")
    train.add_argument("--batch-size", type=int, default=1, help="rows per micro-batch and process")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--max-grad-norm", type=float, default=1.0)
    train.add_argument("--gradient-checkpointing", action="store_true")
    train.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="default: on when CUDA supports it")
    train.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the frozen base weights")
    train.add_argument("--seed", type=int, default=0)
    io = p.add_argument_group("data and output")
    io.add_argument("--text-field", default="text", help="JSONL / dataset field holding the text")
    io.add_argument("--tokenizer", default=None, help="tokenizer folder or id (default: the model's)")
    io.add_argument("--eval-fraction", type=float, default=0.01)
    io.add_argument("--eval-every", type=int, default=None)
    io.add_argument("--save-every", type=int, default=None)
    io.add_argument("--resume", nargs="?", const=True, default=False, help="continue from the latest (or the given) checkpoint")
    io.add_argument("--merge", action="store_true", help="also write a merged full model to OUT/merged")
    io.add_argument("--trust-remote-code", action="store_true")
    io.add_argument("--no-progress", dest="progress", action="store_false")


def run_finetune(args) -> int:
    """Run ``finetune`` with parsed ``finetune_arguments``; prints the outcome on the main process."""
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=args.trust_remote_code)
    summary = finetune(
        args.model, args.data, args.out, rank=args.rank, alpha=args.alpha, dropout=args.dropout,
        target_modules=args.target_modules, lr=args.lr, weight_decay=args.weight_decay, scheduler=args.scheduler,
        warmup_steps=args.warmup_steps, steps=args.steps, epochs=args.epochs, max_length=args.max_length,
        batch_size=args.batch_size, grad_accum=args.grad_accum, max_grad_norm=args.max_grad_norm,
        eval_fraction=args.eval_fraction, eval_every=args.eval_every,
        gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16, dtype=args.dtype,
        save_every=args.save_every, resume=args.resume, merge=args.merge, seed=args.seed,
        text_field=args.text_field, tokenizer=tokenizer, trust_remote_code=args.trust_remote_code,
        progress=args.progress,
    )
    if PartialState().is_main_process:
        line = f"trained to step {summary['steps']}"
        if summary["history"]:  # empty when resuming a run that had already finished
            line += f", loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}"
        if summary["eval_loss"] is not None:
            line += f", eval loss {summary['eval_loss']:.4f} (perplexity {summary['eval_perplexity']:.2f})"
        print(line)
        print(f"adapter written to {summary['adapter']}")
        if summary["merged"]:
            print(f"merged model written to {summary['merged']}")
    return 0


if __name__ == "__main__":  # torchrun --nproc_per_node N -m hf_loglinear.finetune MODEL DATA OUT ...
    parser = argparse.ArgumentParser(prog="python -m hf_loglinear.finetune", description=DESCRIPTION)
    finetune_arguments(parser)
    raise SystemExit(run_finetune(parser.parse_args()))
