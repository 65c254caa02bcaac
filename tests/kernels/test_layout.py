"""``layout.make_layout``: the plan of packed documents, and its reuse across layers."""
import torch

from hf_loglinear.kernels import layout


def test_packed_plan_rows_and_bounds():
    cu = torch.tensor([0, 3, 3, 70], dtype=torch.int32)  # an empty document in the middle
    lay = layout.make_layout(1, 70, cu, None, 64, "cpu")
    assert lay.num_chunks == 2 and lay.max_base == 0
    assert lay.index[0, :3].tolist() == [0, 1, 2] and (lay.index[0, 3:] == 70).all()
    assert (lay.index[1] == 70).all()
    assert lay.index[2, :67].tolist() == list(range(3, 70))
    assert lay.end.tolist() == [3, 0, 67] and lay.last_chunk.tolist() == [0, 0, 1]
    x = torch.randn(1, 70, 2)
    assert torch.equal(lay.scatter(lay.gather(x), 1, 70), x)


def test_same_cu_seqlens_reuses_the_plan():
    """Every layer passes the same tensor: planned once (no host read per layer)."""
    cu = torch.tensor([0, 5, 40], dtype=torch.int32)
    first = layout.make_layout(1, 40, cu, None, 16, "cpu")
    assert layout.make_layout(1, 40, cu, None, 16, "cpu") is first
    assert layout.make_layout(1, 40, cu, None, 8, "cpu") is not first  # other chunk size


def test_modified_or_new_cu_seqlens_is_replanned():
    cu = torch.tensor([0, 5, 40], dtype=torch.int32)
    first = layout.make_layout(1, 40, cu, None, 16, "cpu")
    cu[1] = 20  # in place: the version counter moves
    again = layout.make_layout(1, 40, cu, None, 16, "cpu")
    assert again is not first and again.end.tolist() == [20, 20]
    other = torch.tensor([0, 30, 40], dtype=torch.int32)
    assert layout.make_layout(1, 40, other, None, 16, "cpu").end.tolist() == [30, 10]


def test_start_positions_are_never_cached():
    cu = torch.tensor([0, 5, 40], dtype=torch.int32)
    starts = torch.tensor([3, 100])
    a = layout.make_layout(1, 40, cu, starts, 16, "cpu")
    b = layout.make_layout(1, 40, cu, starts, 16, "cpu")
    assert a is not b and a.base.tolist() == [0, 96] and a.max_base == 96
