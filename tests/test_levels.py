"""Level arithmetic against a brute-force simulation of the Fenwick buckets."""
from __future__ import annotations

import pytest
import torch

from hf_loglinear import levels


def simulate_buckets(length, num_levels):
    """The bucket sets a query sees after each token, built only by the decode rule of SPEC §3
    (merge all levels below m into m, insert the token at level 0) on Python sets."""
    state = [set() for _ in range(num_levels)]
    for t in range(length):
        if t:
            m = min((t ^ (t - 1)).bit_length(), num_levels - 1)
            for lvl in range(m):
                state[m] |= state[lvl]
                state[lvl] = set()
        state[0].add(t)
        yield t, [frozenset(s) for s in state]


def test_levels_match_simulated_buckets_below_2048():
    n = 2048
    positions = torch.arange(n)
    for t, buckets in simulate_buckets(n, num_levels=64):
        row = levels.level_tensor(torch.tensor(t), positions[: t + 1], 64)
        for lvl, members in enumerate(buckets):
            assert set(levels.bucket(t, lvl)) == members
            if members:
                idx = torch.tensor(sorted(members))
                assert torch.all(row[idx] == lvl)
        assert 1 + bin(t).count("1") == sum(1 for b in buckets if b)


@pytest.mark.parametrize("num_levels", [1, 2, 3, 5])
def test_capped_levels_match_merged_top(num_levels):
    positions = torch.arange(300)
    for t, buckets in simulate_buckets(300, num_levels):
        row = levels.level_tensor(torch.tensor(t), positions[: t + 1], num_levels)
        for lvl, members in enumerate(buckets):
            for s in members:
                assert levels.capped_level(t, s, num_levels) == lvl == row[s]


def test_large_positions():
    base = 1 << 40
    for x in [0, 1, 2, 63, 64, 12345, (1 << 20) - 1]:
        t = base + x
        assert levels.level(t, t) == 0
        assert levels.level(t, 0) == 41
        assert levels.level(t, base - 1) == 41
        if x:
            assert levels.level(t, base) == x.bit_length()
        t_tensor = torch.tensor([t, t, t])
        s_tensor = torch.tensor([t, 0, base - 1])
        assert levels.level_tensor(t_tensor, s_tensor, 64).tolist() == [0, 41, 41]
    big = torch.tensor([(1 << 62) + 5, 1 << 40, 0, 1, 2, 3])
    assert levels.bit_length(big).tolist() == [v.bit_length() for v in big.tolist()]


def test_levels_for_length_and_merge_level():
    for length in range(1, 3000):
        used = {levels.level(length - 1, s) for s in range(length)} | {
            levels.level(t, 0) for t in range(length)
        }
        assert levels.levels_for_length(length) == max(used) + 1
    assert levels.merge_level(100, 15) == (100 ^ 99).bit_length()
    assert levels.merge_level(1 << 30, 15) == 14
    with pytest.raises(ValueError, match="t >= 1"):
        levels.merge_level(0, 4)
    with pytest.raises(ValueError, match="length"):
        levels.levels_for_length(0)


@pytest.mark.parametrize("num_levels", [1, 3, 12])
def test_relevel_matches_simulation(num_levels):
    """relevel(old -> new) of one-hot level states equals the buckets the decode rule builds."""
    history = list(simulate_buckets(200, num_levels))
    for old, new in [(0, 1), (5, 6), (63, 64), (63, 100), (7, 7), (100, 199), (1, 128)]:
        # one state per source: a one-hot "value" records where each source sits
        states = torch.zeros(1, 1, num_levels, 1, new + 1, dtype=torch.float64)
        for lvl, members in enumerate(history[old][1]):
            for s in members:
                states[0, 0, lvl, 0, s] = 1.0
        moved = levels.relevel(states, torch.tensor([old]), torch.tensor([new]))
        for s in range(old + 1):
            where = moved[0, 0, :, 0, s].nonzero().flatten().tolist()
            assert where == [levels.capped_level(new, s, num_levels)]


def test_read_levels():
    out = levels.read_levels(torch.tensor([64]), torch.tensor([70]), 15)
    assert out.tolist() == [[3, 3, 3, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]]
    assert levels.read_levels(torch.tensor([5]), torch.tensor([5]), 3).tolist() == [[0, 1, 2]]


def test_bad_level_arguments():
    with pytest.raises(ValueError, match="s <= t"):
        levels.level(3, 4)


@pytest.mark.parametrize("top_exp", [0, 1, 3, 9])
def test_scan_runs_share_a_slot_exactly_when_they_read_the_same_chunks(top_exp):
    """``scan_run`` against the buckets of SPEC §4: scan js < top is read by chunks with bit js
    set and holds the 2^js chunks that share their bits above js with bit js = 0 (identified by
    ca >> (js + 1)); the top holds every chunk before the reader's 2^top_exp-aligned bucket
    (identified by ca >> top_exp). Readers share a slot iff they read the same chunks, the
    recorded chunk is the first of them in the row, and the slots of all scans fit
    ``scan_slot_sizes`` without overlapping."""
    for base, num_chunks in [(0, 1), (0, 37), (5, 20), (77, 64), ((1 << 40) + 3, 9)]:
        num_scans = min(top_exp, (base + num_chunks - 1).bit_length()) + 1
        sizes = levels.scan_slot_sizes(num_chunks, num_scans, top_exp)
        seen = {}  # slot -> (scan, what it holds)
        for js in range(num_scans):
            top = js == num_scans - 1
            readers = {}  # what a chunk reads -> row-local chunks reading it
            for c in range(num_chunks):
                ca = base + c
                if top or (ca >> js) & 1:
                    readers.setdefault(ca >> top_exp if top else ca >> (js + 1), []).append(c)
            for held, chunks in readers.items():
                runs = {tuple(int(x) for x in levels.scan_run(torch.tensor([base + c]), torch.tensor([base]), js,
                                                              num_scans, num_chunks, top_exp)) for c in chunks}
                assert len(runs) == 1
                (slot, first), = runs
                assert first == chunks[0]
                assert sum(sizes[:js]) <= slot < sum(sizes[: js + 1])
                assert seen.setdefault(slot, (js, held)) == (js, held)


def test_chunks_with_bit_counts_and_enumerates_them():
    """The walk of a scan over its sources (bit 0) or readers (bit 1) against brute force."""
    for js in range(5):
        for bit in (0, 1):
            chosen = [x for x in range(200) if (x >> js) & 1 == bit]
            for n in range(200):
                assert levels.chunks_with_bit(n, js, bit) == sum(x < n for x in chosen)
            assert [levels.nth_chunk_with_bit(t, js, bit) for t in range(len(chosen))] == chosen
