"""``convert(src, dst)``: any supported checkpoint -> a log-linear model folder, verified.

    report = convert("state-spaces/mamba2-130m", "out/mamba2-130m-loglinear")

Source tensors stream through one shard at a time into sharded safetensors (source dtype unless
``dtype`` says otherwise; the level tables stay float32), next to config.json with remote code,
the source's tokenizer / generation-config / license files, ``conversion.json`` and a model card.
Everything is written into a hidden folder beside ``dst`` and renamed onto it at the end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import StrictDataclassError
from tqdm.auto import tqdm

from .. import __version__
from ..model_cards.card import render_model_card
from ..remote_code import write_remote_code
from .authors import HAttentionConversion, HGatedDeltaNetConversion
from .detect import FORMATS, detect_format
from .gated_deltanet import GatedDeltaNetConversion, LogLinearGatedDeltaNetRelevel
from .io import DTYPES, CheckpointReader, ShardWriter, read_config, staging_folder
from .mamba2 import LogLinearMamba2Relevel, Mamba2Conversion, MambaSsmConversion
from .plan import model_shapes, our_model_class
from .verify import DEFAULT_LENGTHS, verify_conversion

__all__ = ["CONVERSIONS", "ConversionReport", "convert"]

CONVERSIONS = {
    cls.format: cls
    for cls in (
        Mamba2Conversion, MambaSsmConversion, GatedDeltaNetConversion, HAttentionConversion,
        HGatedDeltaNetConversion, LogLinearMamba2Relevel, LogLinearGatedDeltaNetRelevel,
    )
}

# Files that travel with the weights unchanged.
COPIED = re.compile(
    r"^(tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|"
    r"merges\.txt|tokenizer\.model|spiece\.model|chat_template\.(json|jinja)|generation_config\.json|"
    r"LICENSE.*|NOTICE.*|USE_POLICY.*)$"
)
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
NO_TOKENIZER = ("the source folder has no tokenizer files: copy in the tokenizer the source model uses "
                "(state-spaces Mamba-2 checkpoints use EleutherAI/gpt-neox-20b's)")


@dataclass
class ConversionReport:
    source: str
    destination: str
    format: str
    family: str
    num_levels: int
    dtype: str
    files: list[str]
    num_tensors: int
    total_bytes: int
    verification: dict | None
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    hf_loglinear_version: str = __version__

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"converted {self.source} ({FORMATS[self.format]})",
            f"  -> {self.destination} ({self.num_tensors} tensors, {self.total_bytes / 2**20:.1f} MiB {self.dtype}, "
            f"{self.num_levels} levels, {self.seconds:.1f}s)",
        ]
        if self.verification:
            v = self.verification
            lines.append(
                f"  verification: max |logit diff| {v['max_abs_diff']:.3g} (relative {v['max_rel_diff']:.3g}) "
                f"on lengths {v['lengths']} against {v['reference']}"
            )
            if v["max_rel_diff"] > ROUNDING and self.dtype == "float32":
                lines.append("  note: above typical float32 rounding; deep models amplify it, but compare generations")
        else:
            lines.append("  verification: skipped")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def resolve_source(src: str | os.PathLike) -> Path:
    """A local folder, or a hub repo id downloaded through huggingface_hub (config, weights, tokenizer)."""
    path = Path(src)
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise ValueError(f"{src} is a file; pass the checkpoint folder that contains config.json")
    if not _REPO_ID.match(str(src)):
        raise ValueError(f"{src} does not exist; pass a checkpoint folder or a hub repo id like 'owner/name'")
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise ValueError(f"{src} is not a local folder and HF_HUB_OFFLINE is set; download it first or go online")
    try:
        # One copy of the weights: safetensors when the repo has them, else pytorch_model*.bin.
        has_safetensors = any(f.endswith(".safetensors") for f in HfApi().list_repo_files(str(src)))
        weights = ["*.safetensors"] if has_safetensors else ["*.bin"]
        patterns = ["*.json", *weights, "*.model", "*.txt", "*.jinja", "LICENSE*", "NOTICE*", "README.md"]
        return Path(snapshot_download(str(src), allow_patterns=patterns))
    except Exception as exc:  # network and hub errors come in many types; all mean "could not fetch"
        raise ValueError(f"could not download {src} ({type(exc).__name__}: {exc})") from None


def _cast(name: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The level tables stay float32: bf16(ln(e-1)) would make lambda 1.001 instead of 1.
    if not tensor.is_floating_point() or ".level_weights." in name:
        return tensor
    return tensor.to(dtype)


def _check_written(config, shapes: dict[str, tuple[int, ...]]):
    """The written tensors are exactly our model's parameters: guards against layout drift."""
    expected = model_shapes(config)
    if shapes != expected:
        missing = sorted(expected.keys() - shapes.keys())[:3]
        extra = sorted(shapes.keys() - expected.keys())[:3]
        wrong = [n for n in expected.keys() & shapes.keys() if expected[n] != shapes[n]][:3]
        raise RuntimeError(f"converted tensors do not match {config.model_type}: missing {missing}, extra {extra}, "
                           f"wrong shapes {wrong} (a converter bug: please report it)")


# Refusal limits on max |logit diff| / max |logit|. An exact conversion agrees to float32 rounding,
# which a shallow model keeps near 1e-6 but a deep randomly initialised one amplifies to ~3e-4
# (24 layers); a wrong mapping is off by far more. A cast to bf16/fp16 adds that dtype's noise.
EXACT_LIMIT, LOSSY_LIMIT, ROUNDING = 1e-2, 0.2, 1e-4


def _check_verification(verification: dict, lossy: bool):
    limit = LOSSY_LIMIT if lossy else EXACT_LIMIT
    verification["limit_rel_diff"] = limit
    if verification["max_rel_diff"] > limit:
        raise RuntimeError(
            f"verification failed: logits differ from the source by {verification['max_abs_diff']:.3g} "
            f"(relative {verification['max_rel_diff']:.3g} > {limit}); nothing was written. Please report this "
            "with the source's config.json"
        )


def _write_config_and_code(folder: Path, config):
    """config.json with auto_map, and the model's source as flat remote-code files."""
    model_class = our_model_class(config)
    model_module = model_class.__module__
    config.auto_map = {
        "AutoConfig": f"{type(config).__module__.rpartition('.')[2]}.{type(config).__name__}",
        **{auto: f"{model_module.rpartition('.')[2]}.{name}" for auto, name in model_class._remote_code_classes.items()},
    }
    config.save_pretrained(folder)
    write_remote_code(folder, [type(config).__module__, model_module])


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    """Copy tokenizer, generation-config and license files; returns their names."""
    copied = []
    for path in sorted(src.iterdir()):
        if path.is_file() and COPIED.match(path.name):
            shutil.copy2(path, dst / path.name)
            copied.append(path.name)
    return copied


def _source_license(src: Path) -> str | None:
    readme = src / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # an unparsable card simply states no license we can carry over
        return None


def _plan(src, num_levels: int):
    """Find the source, detect its format and check it, before anything is written."""
    folder = resolve_source(src)
    config = read_config(folder)
    reader = CheckpointReader(folder)
    fmt = detect_format(config, reader.names())
    try:
        conversion = CONVERSIONS[fmt](folder, config, reader, num_levels)
        conversion.check_source()
        target = conversion.target_config()
    except StrictDataclassError as exc:  # transformers' config classes validate their fields
        raise ValueError(f"{folder / 'config.json'} is not a valid {fmt} config: {exc.__cause__ or exc}") from None
    return folder, reader, conversion, target


def _convert_tensors(conversion, reader, writer, dtype, progress):
    with tqdm(total=len(reader.names()), desc="converting tensors", unit="tensor", disable=not progress) as bar:
        for names in reader.files.values():
            for name in names:
                for out_name, tensor in conversion.convert_tensor(name, reader.get(name)):
                    writer.add(out_name, _cast(out_name, tensor, dtype))
                bar.update()
    for out_name, tensor in conversion.new_tensors():
        writer.add(out_name, _cast(out_name, tensor, dtype))
    reader.close()


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    num_levels: int = 15,
    dtype: str | torch.dtype | None = None,
    verify: bool = True,
    overwrite: bool = False,
    max_shard_size: int = 2 * 1024**3,
    verify_lengths: tuple[int, ...] = DEFAULT_LENGTHS,
    repo_id: str | None = None,
    base_model: str | None = None,
    progress: bool = True,
) -> ConversionReport:
    """Convert the checkpoint at ``src`` (folder or hub id) into a log-linear model at ``dst``.

    ``dtype``: "float32" / "bfloat16" / "float16" (default: the source's). ``verify`` runs both
    models and records the logit difference. ``repo_id`` is the hub repo the folder is meant for
    (used in the card's snippets), ``base_model`` the card's base model (default: ``src`` when it is
    a hub id). Raises ValueError for bad input; ``dst`` is only created when everything succeeded.
    """
    start = time.monotonic()
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    folder, reader, conversion, target = _plan(src, num_levels)
    source_dtype = reader.floating_dtype()
    out_dtype = DTYPES.get(dtype, dtype) if dtype is not None else source_dtype
    target.dtype = str(out_dtype).removeprefix("torch.")
    if base_model is None and not Path(src).exists() and _REPO_ID.match(str(src)):
        base_model = str(src)

    with staging_folder(dst, overwrite=overwrite, protect=folder) as staging:
        writer = ShardWriter(staging, max_shard_size)
        _convert_tensors(conversion, reader, writer, out_dtype, progress)
        writer.finish()
        _check_written(target, writer.shapes)
        _write_config_and_code(staging, target)
        copied = _copy_side_files(folder, staging)
        verification = None
        if verify:
            verification = verify_conversion(conversion, staging, target, lengths=verify_lengths, progress=progress)
            _check_verification(verification, lossy=out_dtype not in (source_dtype, torch.float32))
        render_model_card(
            family=conversion.family, model_name=Path(dst).name, num_levels=num_levels,
            source_format=FORMATS[conversion.format], changes=conversion.changes, repo_id=repo_id,
            base_model=base_model, source_description=f"the checkpoint `{folder.name}`",
            license=_source_license(folder), verification=verification,
        ).save(staging / "README.md")
        report = ConversionReport(
            source=str(src), destination=str(Path(dst).resolve()), format=conversion.format,
            family=conversion.family, num_levels=num_levels, dtype=target.dtype,
            files=sorted([p.name for p in staging.iterdir()] + ["conversion.json"]),
            num_tensors=len(writer.shapes), total_bytes=writer.total_bytes, verification=verification,
            changes=conversion.changes, seconds=round(time.monotonic() - start, 2),
            notes=[] if any(name.startswith("tokenizer") for name in copied) else [NO_TOKENIZER],
        )
        (staging / "conversion.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report
