"""Fine-tuning data: read documents, tokenise them, pack them into fixed-size rows.

    train, eval = build_datasets("corpus/", tokenizer, max_length=2048, eval_fraction=0.01)
    batch = collate_packed([train[0], train[1]])   # input_ids [1, 2 * 2048], labels, cu_seqlens

Sources: a plain-text file (one document), a JSONL file (one object per line, the document in
``text_field``; a ``.json`` file holding a list of such objects also works), a folder of such files,
or a ``datasets`` dataset written by ``save_to_disk`` (read only when ``datasets`` is installed).

Packing: the documents, in a seeded random order, are concatenated and cut into rows of exactly
``max_length`` tokens; a document that does not fit continues at the start of the next row. Each row
carries ``cu_seqlens``, the boundaries of the pieces it holds, so the model restarts its levels and
convolutions at every document start and no document sees another. The label of each piece's first
token (and of every row's first token) is -100: the shifted LM loss never predicts one document
from the end of another. The last row is completed with a padding piece whose labels are all -100.
"""
from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "byte_tokenizer",
    "read_documents",
    "tokenize_documents",
    "pack_documents",
    "PackedRows",
    "build_datasets",
    "split_rows",
    "collate_packed",
]

IGNORE_INDEX = -100
TEXT_SUFFIXES = {".txt", ".md", ".text"}
JSON_SUFFIXES = {".jsonl", ".json"}


# --------------------------------------------------------------------------- tokenizer
def byte_tokenizer(eos_token: str = "<|endoftext|>"):
    """A byte-level tokenizer that needs no download: one token per UTF-8 byte (ids 0-255) and
    ``eos_token`` = 256, also used for padding. Vocabulary 257."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)} | {eos_token: len(alphabet)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos_token, pad_token=eos_token)


# --------------------------------------------------------------------------- reading
def read_documents(source, text_field: str = "text") -> list[str]:
    """Every non-empty document of ``source`` (a file, a folder of files, or a saved dataset)."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"data source {source} does not exist")
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            documents = _saved_dataset_texts(path, text_field)
        else:
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | JSON_SUFFIXES)
            if not files:
                raise ValueError(
                    f"{source} holds no .txt, .md, .jsonl or .json files and is not a dataset saved with save_to_disk"
                )
            documents = [doc for f in files for doc in _file_texts(f, text_field)]
    else:
        documents = _file_texts(path, text_field)
    documents = [doc for doc in documents if doc.strip()]
    if not documents:
        raise ValueError(f"{source} holds no non-empty documents")
    return documents


def _file_texts(path: Path, text_field: str) -> list[str]:
    if path.suffix.lower() not in JSON_SUFFIXES:
        return [path.read_text(encoding="utf-8")]
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return [_field(record, text_field, f"{path}[{i}]") for i, record in enumerate(records)]
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON object ({exc})") from None
        documents.append(_field(record, text_field, f"{path}:{number}"))
    return documents


def _field(record, text_field: str, where: str) -> str:
    if not isinstance(record, dict) or text_field not in record:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{where}: expected an object with a {text_field!r} field (--text-field), found {found}")
    value = record[text_field]
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {text_field!r} must be a string, got {type(value).__name__}")
    return value


def _saved_dataset_texts(path: Path, text_field: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"{path} is a dataset saved with save_to_disk; reading it needs the `datasets` package (pip install datasets)"
        ) from None
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if "train" in data:
            data = data["train"]
        elif len(data) == 1:
            data = next(iter(data.values()))
        else:
            raise ValueError(f"{path} holds the splits {sorted(data)}; save the one to train on (or a 'train' split)")
    if text_field not in data.column_names:
        raise ValueError(f"{path}: no column {text_field!r} (--text-field); columns are {data.column_names}")
    return [str(t) for t in data[text_field]]


# --------------------------------------------------------------------------- tokenising and packing
def tokenize_documents(documents: list[str], tokenizer, add_eos: bool = True, chunk: int = 256) -> list[list[int]]:
    """Token ids per document (the tokenizer's own special tokens, plus EOS at the end when it has one)."""
    eos = tokenizer.eos_token_id if add_eos else None
    ids = []
    for i in range(0, len(documents), chunk):
        for doc in tokenizer(documents[i : i + chunk])["input_ids"]:
            if eos is not None and (not doc or doc[-1] != eos):
                doc = doc + [eos]
            if doc:
                ids.append(doc)
    return ids


@dataclass
class PackedRows(Dataset):
    """Rows of ``max_length`` tokens; ``cu_seqlens[r]`` bounds the document pieces of row r."""

    input_ids: torch.Tensor  # [R, max_length] int64
    labels: torch.Tensor  # [R, max_length] int64, -100 where nothing is predicted
    cu_seqlens: list[torch.Tensor]  # R tensors [pieces + 1] int32, from 0 to max_length

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index], "cu_seqlens": self.cu_seqlens[index]}

    @property
    def num_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def select(self, rows: slice) -> "PackedRows":
        return PackedRows(self.input_ids[rows], self.labels[rows], self.cu_seqlens[rows])


def pack_documents(documents: list[list[int]], max_length: int, pad_token_id: int = 0) -> PackedRows:
    """Concatenate ``documents`` (token id lists) and cut the stream into rows of ``max_length``."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    lengths = torch.tensor([len(d) for d in documents], dtype=torch.int64)
    if not len(documents) or int(lengths.min()) < 1:
        raise ValueError("pack_documents needs at least one document and no empty ones")
    total = int(lengths.sum())
    stream = torch.from_numpy(np.fromiter(itertools.chain.from_iterable(documents), dtype=np.int64, count=total))
    rows = -(-stream.numel() // max_length)
    padding = rows * max_length - stream.numel()
    doc_starts = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
    # Padding is one more piece of its own, so that it restarts the model state like a document.
    piece_starts = torch.cat([doc_starts, lengths.sum()[None]]) if padding else doc_starts
    input_ids = torch.cat([stream, stream.new_full((padding,), pad_token_id)]).view(rows, max_length)
    labels = input_ids.clone().flatten()
    labels[piece_starts] = IGNORE_INDEX
    labels[stream.numel() :] = IGNORE_INDEX
    # Row starts too: a batch joins rows end to end, and a row's first token is never predicted
    # from the row before it.
    labels[::max_length] = IGNORE_INDEX
    # Row r holds the piece starts strictly between r * max_length and (r + 1) * max_length.
    row_starts = torch.arange(rows + 1) * max_length
    first = torch.searchsorted(piece_starts, row_starts[:-1], right=True).tolist()
    last = torch.searchsorted(piece_starts, row_starts[1:]).tolist()
    edges = torch.tensor([max_length])
    cu_seqlens = [
        torch.cat([edges.new_zeros(1), piece_starts[a:b] - r * max_length, edges]).to(torch.int32)
        for r, (a, b) in enumerate(zip(first, last))
    ]
    return PackedRows(input_ids, labels.view(rows, max_length), cu_seqlens)


def build_datasets(
    source, tokenizer, *, max_length: int, text_field: str = "text", eval_fraction: float = 0.0, seed: int = 0
) -> tuple[PackedRows, PackedRows | None]:
    """Read, shuffle (seeded), tokenise and pack ``source``; split off the eval rows (``split_rows``;
    None when ``eval_fraction`` is 0)."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    documents = read_documents(source, text_field)
    random.Random(seed).shuffle(documents)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    packed = pack_documents(tokenize_documents(documents, tokenizer), max_length, pad)
    return split_rows(packed, eval_fraction)


def split_rows(packed: PackedRows, eval_fraction: float) -> tuple[PackedRows, PackedRows | None]:
    """The last ``eval_fraction`` of the rows (at least one when positive) as the eval split."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0.0:
        return packed, None
    num_eval = max(1, round(eval_fraction * len(packed)))
    if num_eval >= len(packed):
        raise ValueError(
            f"the data packs into only {len(packed)} row(s) of {packed.input_ids.shape[1]} tokens, too few to hold "
            f"out {eval_fraction:.0%} for eval; lower --max-length or set --eval-fraction 0"
        )
    return packed.select(slice(None, -num_eval)), packed.select(slice(-num_eval, None))


def collate_packed(rows: list[dict]) -> dict:
    """B packed rows -> one B = 1 row of B * max_length tokens with the joined ``cu_seqlens``: the
    model then runs every document of the batch as its own sequence."""
    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + row["input_ids"].shape[0])
    cu_seqlens = torch.cat([rows[0]["cu_seqlens"][:1]] + [row["cu_seqlens"][1:] + o for row, o in zip(rows, offsets)])
    return {
        "input_ids": torch.cat([row["input_ids"] for row in rows])[None],
        "labels": torch.cat([row["labels"] for row in rows])[None],
        "cu_seqlens": cu_seqlens.to(torch.int32),
    }
