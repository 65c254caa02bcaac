"""``hf-loglinear quickstart``: the whole path on a laptop CPU, nothing downloaded.

1. trains a byte-level BPE tokenizer and a tiny transformers ``Mamba2ForCausalLM`` (about a
   minute on 2 cores) on the text shipped in ``hf_loglinear/corpus``;
2. converts it to log-linear Mamba-2 and prints the verification figures, and checks that greedy
   decoding matches the source token for token;
3. fine-tunes the log-linear model briefly with LoRA (``hf_loglinear.finetune``) and merges it;
4. generates a sample and leaves hub-ready folders with model cards:
   ``OUT/mamba2-tiny`` (the trained source), ``OUT/loglinear-tiny`` (the exact conversion) and
   ``OUT/loglinear-tiny-lora/merged`` (the fine-tuned model; ``adapter/`` beside it).

The whole of OUT is written to a temporary folder beside it and renamed at the end.
"""
from __future__ import annotations

import math
import shutil
import time
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["DEFAULT_LORA_STEPS", "DEFAULT_OUT", "DEFAULT_STEPS", "load_corpus", "run_quickstart"]

DEFAULT_OUT = "loglinear-quickstart"
DEFAULT_STEPS = 400
DEFAULT_LORA_STEPS = 30
LORA_RANK = 8
VOCAB_SIZE = 512
SEQ_LEN, BATCH = 128, 8
PROMPT = "The lighthouse keeper"
SPECIAL = "<|endoftext|>"


def load_corpus() -> list[str]:
    """The shipped texts, one string per file, in name order."""
    files = sorted(f for f in resources.files("hf_loglinear").joinpath("corpus").iterdir() if f.name.endswith(".txt"))
    return [f.read_text(encoding="utf-8") for f in files]


def train_tokenizer(texts: list[str]):
    """A byte-level BPE (no unknown tokens, no download) saved in the standard HF format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[SPECIAL], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL)


def tiny_mamba2(vocab_size: int, eos_token_id: int):
    from transformers import Mamba2Config, Mamba2ForCausalLM

    config = Mamba2Config(
        vocab_size=vocab_size, hidden_size=128, num_heads=8, head_dim=32, state_size=16, n_groups=1,
        num_hidden_layers=3, expand=2, conv_kernel=4, chunk_size=16, tie_word_embeddings=True,
        bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id,
    )
    return Mamba2ForCausalLM(config)


def train(model, tokens, steps: int, seed: int = 0):
    """AdamW on random windows of ``tokens``; cosine schedule with warm-up. Returns the last loss."""
    import torch

    from .conversion.mamba2 import torch_mamba2_path

    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    schedule = lambda step: min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    bar = tqdm(range(steps), desc="training Mamba-2", unit="step")
    with torch_mamba2_path():
        for _ in bar:
            starts = torch.randint(0, len(tokens) - SEQ_LEN - 1, (BATCH,), generator=gen)
            batch = torch.stack([tokens[s : s + SEQ_LEN] for s in starts])
            loss = model(batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval(), loss.item()


def data_folder() -> Path:
    return Path(str(resources.files("hf_loglinear").joinpath("corpus")))


def lora_step(converted: Path, out: Path, steps: int, report) -> Path | None:
    """LoRA-fine-tune the converted model on the shipped text, merge it, and give the merged
    folder its card. Returns the merged folder (None when ``steps`` is 0)."""
    if steps == 0:
        print("LoRA fine-tuning: skipped (--lora-steps 0)")
        return None
    from .finetune import finetune
    from .model_cards.card import render_model_card

    summary = finetune(converted, data_folder(), out, rank=LORA_RANK, steps=steps, max_length=256, batch_size=4,
                       lr=2e-3, eval_fraction=0.05, merge=True)
    merged = Path(summary["merged"])
    print(f"LoRA fine-tuning: rank {LORA_RANK}, {steps} steps, held-out loss {summary['eval_loss']:.3f} "
          f"-> {out.name}/merged/")
    render_model_card(
        family=report.family, model_name="loglinear-tiny-lora", num_levels=report.num_levels,
        source_format="transformers Mamba-2, trained by the quickstart", changes=report.changes,
        license="apache-2.0", verification=report.verification, function_preserving=False,
        finetune={"rank": LORA_RANK, "steps": steps, "eval_loss": summary["eval_loss"]},
    ).save(merged / "README.md")
    shutil.copy2(converted / "conversion.json", merged / "conversion.json")
    return merged


def _greedy_matches(source, converted, prompt_ids, new_tokens: int = 40) -> bool:
    """Greedy continuations of the source and the converted model are identical."""
    import torch

    from .conversion.mamba2 import torch_mamba2_path

    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    with torch.no_grad(), torch_mamba2_path():
        a = source.generate(prompt_ids, **kwargs)
        b = converted.generate(prompt_ids, **kwargs)
    return torch.equal(a, b)


def run_quickstart(out: str | Path = DEFAULT_OUT, *, steps: int = DEFAULT_STEPS, lora_steps: int = DEFAULT_LORA_STEPS,
                   overwrite: bool = False, seed: int = 0) -> Path:
    """Run the quickstart into ``out``; returns the hub-ready folder of the final model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .conversion import convert
    from .conversion.io import staging_folder

    if steps < 1 or lora_steps < 0:
        raise ValueError(f"--steps must be >= 1 and --lora-steps >= 0, got {steps} and {lora_steps}")
    start = time.monotonic()
    torch.manual_seed(seed)
    out = Path(out).resolve()
    with staging_folder(out, overwrite=overwrite) as staging:
        texts = load_corpus()
        tokenizer = train_tokenizer(texts)
        tokens = torch.tensor(tokenizer(f"\n{SPECIAL}\n".join(texts))["input_ids"])
        print(f"corpus: {sum(map(len, texts)) / 1024:.0f} KiB of text, {len(tokens):,} tokens "
              f"(byte-level BPE, {len(tokenizer)} entries)")

        model, loss = train(tiny_mamba2(len(tokenizer), tokenizer.eos_token_id), tokens, steps, seed)
        source_dir = staging / "mamba2-tiny"
        model.save_pretrained(source_dir)
        tokenizer.save_pretrained(source_dir)
        # Our text, our model: the license the converter carries over into the card.
        (source_dir / "README.md").write_text("---\nlicense: apache-2.0\n---\n# mamba2-tiny\n\n"
                                              "A tiny Mamba-2 trained by `hf-loglinear quickstart`.\n")
        print(f"trained Mamba-2 ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
              f"{steps} steps, final loss {loss:.3f}) -> {source_dir.name}/")

        converted_dir = staging / "loglinear-tiny"
        report = convert(source_dir, converted_dir, num_levels=15)
        v = report.verification
        print(f"converted to log-linear Mamba-2 (15 levels) -> {converted_dir.name}/\n"
              f"  verification: max |logit diff| {v['max_abs_diff']:.2e}, relative {v['max_rel_diff']:.2e} "
              f"(lengths {v['lengths']}, fp32)")
        converted = AutoModelForCausalLM.from_pretrained(converted_dir, dtype=torch.float32).eval()
        prompt = tokenizer(PROMPT, return_tensors="pt").input_ids
        same = _greedy_matches(model, converted, prompt)
        print(f"  greedy decoding, 40 tokens: {'identical to' if same else 'DIFFERENT from'} the source model")

        merged = lora_step(converted_dir, staging / "loglinear-tiny-lora", lora_steps, report)
        final_dir = merged or converted_dir
        final = AutoModelForCausalLM.from_pretrained(final_dir, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(final_dir)
        with torch.no_grad():
            sample = final.generate(prompt, max_new_tokens=80, do_sample=True, top_k=40, temperature=0.8)
        print(f"sample ({final_dir.relative_to(staging)}): {tok.decode(sample[0], skip_special_tokens=True)!r}")
        hub_dir = out / final_dir.relative_to(staging)
    print(f"wrote {out} in {time.monotonic() - start:.0f}s\n"
          f"  hub-ready folder: {hub_dir} (model card README.md, conversion.json)\n"
          f"  publish it with: hf-loglinear upload {hub_dir} <your-name>/{hub_dir.parent.name if merged else hub_dir.name}")
    return hub_dir
