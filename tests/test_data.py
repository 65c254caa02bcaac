"""Fine-tuning data: reading every source format, packing, eval split, batch collation."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from hf_loglinear.data import byte_tokenizer, build_datasets, collate_packed, pack_documents, read_documents, tokenize_documents

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer(EOS)


def test_byte_tokenizer_round_trips(tokenizer):
    text = "héllo, wörld\n"
    ids = tokenizer(text)["input_ids"]
    assert len(ids) == len(text.encode()) and max(ids) < 256 and tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 256 and len(tokenizer) == 257


def test_read_every_source_format(tmp_path):
    (tmp_path / "a.txt").write_text("first document\nsecond line of it\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "two"}) + "\n\n" + json.dumps({"body": "three"}) + "\n")
    (tmp_path / "c.json").write_text(json.dumps([{"body": "four"}, {"body": "  "}]))
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    assert read_documents(tmp_path / "a.txt") == ["first document\nsecond line of it\n"]
    assert read_documents(tmp_path / "b.jsonl", "body") == ["two", "three"]
    (tmp_path / "a.txt").unlink()
    assert read_documents(tmp_path, "body") == ["two", "three", "four"]  # sorted files, blank dropped


def test_read_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_documents(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="holds no"):
        read_documents(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"content": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected an object with a 'text' field"):
        read_documents(bad)
    bad.write_text('{"text": 3}\n')
    with pytest.raises(ValueError, match="must be a string"):
        read_documents(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not a JSON object"):
        read_documents(bad)


def test_saved_dataset(tmp_path, monkeypatch):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dataset_dict.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as where `datasets` is not installed
    with pytest.raises(ValueError, match="needs the `datasets` package"):
        read_documents(saved)

    # A stand-in with the two `datasets` types and load_from_disk, to check which split and column are read.
    class Dataset(dict):
        column_names = property(lambda self: list(self))

    class DatasetDict(dict):
        pass

    splits = DatasetDict(validation=Dataset(text=["v"]), train=Dataset(text=["a", "b"], body=["x", "y"]))
    fake = types.SimpleNamespace(Dataset=Dataset, DatasetDict=DatasetDict, load_from_disk=lambda path: splits)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert read_documents(saved) == ["a", "b"]
    assert read_documents(saved, "body") == ["x", "y"]
    with pytest.raises(ValueError, match=r"no column 'content'.*\['text', 'body'\]"):
        read_documents(saved, "content")
    del splits["train"]
    assert read_documents(saved) == ["v"]
    splits["test"] = Dataset(text=["t"])
    with pytest.raises(ValueError, match="holds the splits"):
        read_documents(saved)


def test_tokenize_appends_eos(tokenizer):
    ids = tokenize_documents(["ab", "c" + EOS], tokenizer)
    assert [len(d) for d in ids] == [3, 2] and ids[0][-1] == ids[1][-1] == 256  # EOS added once
    assert tokenizer.decode(ids[0][:-1]) == "ab" and tokenizer.decode(ids[1][:-1]) == "c"


def test_pack_rows_boundaries_and_labels():
    docs = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]]  # 10 tokens into rows of 4
    packed = pack_documents(docs, max_length=4, pad_token_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert [c.tolist() for c in packed.cu_seqlens] == [[0, 3, 4], [0, 4], [0, 2, 4]]
    assert all(c.dtype == torch.int32 for c in packed.cu_seqlens)
    # -100 at every piece start and row start, and over the padding piece.
    assert packed.labels.tolist() == [[-100, 2, 3, -100], [-100, 6, 7, 8], [-100, 10, -100, -100]]
    assert packed.num_target_tokens == 6
    with pytest.raises(ValueError, match="at least 2"):
        pack_documents(docs, max_length=1)
    with pytest.raises(ValueError, match="no empty"):
        pack_documents([[1], []], max_length=4)


def test_collate_joins_rows_into_one_packed_row():
    packed = pack_documents([[1, 2, 3], [4, 5, 6, 7, 8], [9, 10]], max_length=4)
    batch = collate_packed([packed[0], packed[2]])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 9, 10, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, -100, 10, -100, -100]]
    assert batch["cu_seqlens"].tolist() == [0, 3, 4, 6, 8]
    assert batch["cu_seqlens"].dtype == torch.int32


def test_build_datasets_split_is_seeded_and_covers_everything(tmp_path, tokenizer):
    lines = [json.dumps({"text": f"document number {i} " * (i % 5 + 1)}) for i in range(40)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    train, held = build_datasets(tmp_path / "d.jsonl", tokenizer, max_length=64, eval_fraction=0.1, seed=3)
    again, _ = build_datasets(tmp_path / "d.jsonl", tokenizer, max_length=64, eval_fraction=0.1, seed=3)
    other, _ = build_datasets(tmp_path / "d.jsonl", tokenizer, max_length=64, eval_fraction=0.1, seed=4)
    total = sum(len(tokenizer(json.loads(line)["text"])["input_ids"]) + 1 for line in lines)
    assert (len(train) + len(held)) * 64 >= total > (len(train) + len(held) - 1) * 64
    assert len(held) == round(0.1 * (len(train) + len(held)))
    assert torch.equal(train.input_ids, again.input_ids) and not torch.equal(train.input_ids, other.input_ids)
    no_eval, none = build_datasets(tmp_path / "d.jsonl", tokenizer, max_length=64, seed=3)
    assert none is None and len(no_eval) == len(train) + len(held)
    with pytest.raises(ValueError, match="too few to hold out"):
        build_datasets(tmp_path / "d.jsonl", tokenizer, max_length=100000, eval_fraction=0.1)
    with pytest.raises(ValueError, match="eval_fraction"):
        build_datasets(tmp_path / "d.jsonl", tokenizer, max_length=64, eval_fraction=1.0)
