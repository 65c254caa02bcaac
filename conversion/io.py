"""Checkpoint folders in and out, one tensor (and one output shard) at a time.

- ``CheckpointReader(folder)``: names, shapes and tensors of a checkpoint stored as safetensors
  (single file or sharded with an index) or as ``pytorch_model.bin`` (single or sharded), read
  lazily so that converting never holds more than one source shard.
- ``ShardWriter(folder, max_shard_bytes)``: writes tensors as they come into numbered
  safetensors shards plus ``model.safetensors.index.json`` (or one ``model.safetensors``).
- ``staging_folder(dst, overwrite)``: a temporary folder next to ``dst`` that is renamed onto
  ``dst`` only when the block completes; on any error (or a kill) ``dst`` is never created.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedConfig

__all__ = ["CheckpointReader", "ShardWriter", "staging_folder", "read_config", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool}


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no config.json; pass a checkpoint folder (config.json plus weights)")
    try:  # transformers' reader also decodes its {"__float__": "Infinity"} encoding
        return PreTrainedConfig._dict_from_json_file(path)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-download the checkpoint") from None


class CheckpointReader:
    """Lazy access to the tensors of a checkpoint folder, grouped by the file that holds them."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._open: tuple[str, object] | None = None  # the one file currently held open
        self.files = self._weight_files()  # file name -> ordered tensor names
        self.locations = {name: file for file, names in self.files.items() for name in names}

    # ------------------------------------------------------------------ discovery
    def _weight_files(self) -> dict[str, list[str]]:
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index_path = self.folder / index_name
            if index_path.is_file():
                return self._from_index(index_path)
        for single in ("model.safetensors", "pytorch_model.bin"):
            if (self.folder / single).is_file():
                return {single: self._names_in(single)}
        raise ValueError(
            f"{self.folder} has no weights: expected model.safetensors, model.safetensors.index.json "
            "with its shards, or pytorch_model.bin"
        )

    def _from_index(self, index_path: Path) -> dict[str, list[str]]:
        weight_map = json.loads(index_path.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no weight_map; re-download the checkpoint")
        files: dict[str, list[str]] = {}
        for file in dict.fromkeys(weight_map.values()):
            if not (self.folder / file).is_file():
                raise ValueError(
                    f"shard {file} listed in {index_path.name} is missing from {self.folder}; download it again"
                )
            names = self._names_in(file)
            listed = [n for n, f in weight_map.items() if f == file]
            absent = sorted(set(listed) - set(names))
            if absent:
                raise ValueError(f"{file} lacks {len(absent)} tensors its index lists (e.g. {absent[0]}); download it again")
            files[file] = [n for n in names if weight_map.get(n) == file]
        return files

    def _names_in(self, file: str) -> list[str]:
        return list(self._handle(file).keys())

    def _handle(self, file: str):
        """Open ``file`` (closing the previous one): a safetensors handle or an mmapped state dict."""
        if self._open is not None and self._open[0] == file:
            return self._open[1]
        self._open = None
        path = self.folder / file
        try:
            if file.endswith(".safetensors"):
                handle = safe_open(str(path), framework="pt")
            else:
                handle = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # corrupt or truncated files raise many different types
            raise ValueError(f"cannot read {path} ({type(exc).__name__}: {exc}); download it again") from None
        if not file.endswith(".safetensors") and not isinstance(handle, dict):
            raise ValueError(f"{path} does not hold a state dict (found {type(handle).__name__})")
        self._open = (file, handle)
        return handle

    # ------------------------------------------------------------------ access
    def names(self) -> list[str]:
        return list(self.locations)

    def shape(self, name: str) -> tuple[int, ...]:
        handle = self._handle(self.locations[name])
        if isinstance(handle, dict):
            return tuple(handle[name].shape)
        return tuple(handle.get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        handle = self._handle(self.locations[name])
        if isinstance(handle, dict):
            return handle[name].dtype
        return _SAFETENSORS_DTYPES[handle.get_slice(name).get_dtype()]

    def get(self, name: str) -> torch.Tensor:
        if name not in self.locations:
            raise KeyError(name)
        handle = self._handle(self.locations[name])
        return handle[name] if isinstance(handle, dict) else handle.get_tensor(name)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, visiting the files in order (each opened once)."""
        return {name: self.shape(name) for names in self.files.values() for name in names}

    def floating_dtype(self) -> torch.dtype:
        """The dtype of the checkpoint's floating tensors (the most common one)."""
        counts: dict[torch.dtype, int] = {}
        for name in self.names():
            dtype = self.dtype(name)
            if dtype.is_floating_point:
                counts[dtype] = counts.get(dtype, 0) + 1
        return max(counts, key=counts.get) if counts else torch.float32

    def close(self):
        self._open = None


class ShardWriter:
    """Collects tensors into shards of at most ``max_shard_bytes`` (a single larger tensor gets a
    shard of its own) and writes each shard as soon as it is full."""

    def __init__(self, folder: Path, max_shard_bytes: int = 2 * 1024**3):
        self.folder, self.max_shard_bytes = Path(folder), max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor):
        if name in self.shapes:
            raise ValueError(f"tensor {name} written twice")
        # Views of a larger tensor (row slices) would drag its whole storage into the file.
        tensor = tensor.detach().contiguous().clone() if tensor._base is not None else tensor.detach().contiguous()
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor
        self.shapes[name] = tuple(tensor.shape)
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self):
        file = f"part-{len(self._shards) + 1:05d}.safetensors"
        save_file(self._pending, str(self.folder / file), metadata={"format": "pt"})
        self._shards.append((file, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def finish(self) -> list[str]:
        """Write the last shard, give the shards their final names and the index; returns the files."""
        if self._pending or not self._shards:
            self._flush()
        if len(self._shards) == 1:
            os.replace(self.folder / self._shards[0][0], self.folder / "model.safetensors")
            return ["model.safetensors"]
        count, weight_map, files = len(self._shards), {}, []
        for i, (temp_name, names) in enumerate(self._shards, start=1):
            final = f"model-{i:05d}-of-{count:05d}.safetensors"
            os.replace(self.folder / temp_name, self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
            files.append(final)
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        return files + ["model.safetensors.index.json"]


def _check_destination(dst: Path, overwrite: bool, protect: Path | None):
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"{dst} exists and is not a folder; choose another destination")
    if protect is not None:
        protect = protect.resolve()
        if dst == protect or protect in dst.parents or dst in protect.parents:
            raise ValueError(f"destination {dst} overlaps the source {protect}; choose another folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ValueError(f"{dst} already exists and is not empty; pass --overwrite (overwrite=True) or another folder")


@contextmanager
def staging_folder(dst: str | os.PathLike, *, overwrite: bool = False, protect: str | os.PathLike | None = None):
    """Yield a fresh folder next to ``dst``; on success it replaces ``dst`` in one rename.

    ``protect`` (the source) may be neither ``dst`` nor inside it nor contain it. The staging
    folder is a hidden sibling, so a killed process leaves ``dst`` untouched (and absent if it was).
    """
    dst = Path(dst).resolve()
    _check_destination(dst, overwrite, Path(protect) if protect is not None else None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        yield staging
        _check_destination(dst, overwrite, None)  # someone may have filled dst meanwhile
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            os.replace(dst, old / dst.name)
            os.replace(staging, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, dst)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
