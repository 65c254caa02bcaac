"""Which checkpoint format a folder holds, decided from its config.json and tensor names."""
from __future__ import annotations

__all__ = ["FORMATS", "UnknownFormatError", "detect_format"]

# name -> what the user sees in errors, reports and model cards
FORMATS = {
    "mamba2": "transformers Mamba-2 (model_type 'mamba2', safetensors, e.g. Mamba-Codestral)",
    "mamba_ssm": "state-spaces / mamba_ssm Mamba-2 (config.json with d_model, n_layer, ssm_cfg; pytorch_model.bin)",
    "gated_deltanet": "fla Gated DeltaNet (model_type 'gated_deltanet')",
    "hattention": "the authors' log-linear Mamba-2 (model_type 'hattention')",
    "h_gated_deltanet": "the authors' log-linear Gated DeltaNet (model_type 'h_gated_deltanet')",
    "loglinear_mamba2": "hf-loglinear log-linear Mamba-2 (model_type 'loglinear_mamba2'; changes num_levels)",
    "loglinear_gated_deltanet": "hf-loglinear log-linear Gated DeltaNet (model_type 'loglinear_gated_deltanet'; changes num_levels)",
}

# A tensor every checkpoint of the format has (layer 0), to catch a config that lies about its weights.
_SIGNATURE = {
    "mamba2": "backbone.layers.0.mixer.in_proj.weight",
    "mamba_ssm": "backbone.layers.0.mixer.in_proj.weight",
    "gated_deltanet": "model.layers.0.attn.q_proj.weight",
    "hattention": "backbone.layers.0.mixer.L",
    "h_gated_deltanet": "model.layers.0.attn.l_proj.weight",
    "loglinear_mamba2": "backbone.layers.0.mixer.level_proj.weight",
    "loglinear_gated_deltanet": "model.layers.0.attn.level_proj.weight",
}


class UnknownFormatError(ValueError):
    """The folder is not a checkpoint format the converter knows."""


def _supported() -> str:
    return "; ".join(f"{name}: {text}" for name, text in FORMATS.items())


def detect_format(config: dict, names: list[str]) -> str:
    """The key of ``FORMATS`` that ``config`` (config.json as a dict) and ``names`` (tensor names) match."""
    model_type = config.get("model_type")
    if model_type is None and {"d_model", "n_layer", "ssm_cfg"} <= config.keys():
        layer = (config.get("ssm_cfg") or {}).get("layer", "Mamba1")
        if layer != "Mamba2":
            raise UnknownFormatError(
                f"this state-spaces checkpoint uses ssm_cfg.layer={layer!r}; only Mamba2 layers convert "
                "(log-linear attention needs Mamba-2's scalar decay)"
            )
        fmt = "mamba_ssm"
    elif model_type in FORMATS and model_type != "mamba_ssm":
        fmt = model_type
    else:
        found = f"model_type={model_type!r}" if model_type else f"no model_type (config keys: {sorted(config)[:8]})"
        raise UnknownFormatError(
            f"unsupported checkpoint: {found}, tensors like {names[:3]}. Supported formats: {_supported()}"
        )
    if _SIGNATURE[fmt] not in names:
        raise UnknownFormatError(
            f"config.json says {FORMATS[fmt]}, but the weights lack {_SIGNATURE[fmt]} "
            f"(tensors like {names[:3]}); the folder mixes formats or is incomplete"
        )
    return fmt
