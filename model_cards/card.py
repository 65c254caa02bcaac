"""Model cards for converted and fine-tuned log-linear models, rendered by huggingface_hub.

    card = render_model_card(family="mamba2", model_name="mamba2-130m-loglinear", ...)
    card.save(folder / "README.md")
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

__all__ = ["FAMILIES", "TEMPLATE_PATH", "render_model_card"]

TEMPLATE_PATH = Path(__file__).with_name("loglinear_model_card.md")

# What the card says per model family: names, hub tags and the LoRA targets that reach every
# trained projection (1-D tables train through modules_to_save instead).
FAMILIES = {
    "mamba2": {
        "architecture": "log-linear Mamba-2",
        "source_architecture": "Mamba-2",
        "tags": ["mamba2"],
        "lora_target_modules": ["in_proj", "out_proj", "level_proj"],
    },
    "gated_deltanet": {
        "architecture": "log-linear Gated DeltaNet",
        "source_architecture": "Gated DeltaNet",
        "tags": ["gated-deltanet"],
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "g_proj", "o_proj", "level_proj"],
    },
}


def distinct_context(num_levels: int) -> int:
    """Longest sequence whose buckets all have their own level weight: 2^(L-1) tokens."""
    return 1 << (num_levels - 1)


def render_model_card(
    *,
    family: str,
    model_name: str,
    num_levels: int,
    source_format: str,
    changes: list[str],
    repo_id: str | None = None,
    base_model: str | None = None,
    source_description: str = "a local checkpoint",
    license: str | None = None,
    verification: dict | None = None,
    function_preserving: bool = True,
    finetune: dict | None = None,
    extra_tags: list[str] | None = None,
) -> ModelCard:
    """Render the card. ``verification`` is the dict the converter stores in conversion.json
    (max_abs_diff, max_rel_diff, lengths, device, reference) or None when none was run;
    ``finetune`` (rank, steps, eval_loss) describes a LoRA fine-tune merged after the conversion."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}")
    spec = FAMILIES[family]
    card_data = ModelCardData(
        license=license,
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["hf-loglinear", "log-linear-attention", *spec["tags"], "custom_code", *(extra_tags or [])],
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        architecture=spec["architecture"],
        source_architecture=spec["source_architecture"],
        lora_target_modules=spec["lora_target_modules"],
        num_levels=num_levels,
        distinct_context=distinct_context(num_levels),
        source_format=source_format,
        source_description=source_description,
        changes=changes,
        repo_id=repo_id or f"your-name/{model_name}",
        base_model=base_model,
        license=license,
        verification=verification,
        function_preserving=function_preserving,
        finetune=finetune,
    )
