"""Reducers between the projector and the LLM: EVS, PixelDiff, RandomDrop, UniformTemporal, DivPrune, ToMe, AudioMerge.

Budgets are checked against hand-counted values and the stated formulas over many shapes and rates; DivPrune, ToMe
and AudioMerge against brute-force re-implementations written here from the papers' descriptions (DivPrune: the
official loop over the full distance matrix); PixelDiff against scores worked out by hand on drawn frames; EVS's
scores against the cosine dissimilarity in float64, and its keep mask against a ranking of its own scores.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.media import VideoClip
from omni_lab.reduction import (
    EVS,
    AudioMerge,
    DivPrune,
    PixelDiff,
    RandomDrop,
    Reducer,
    ReductionItem,
    ToMe,
    UniformTemporal,
)
from omni_lab.reduction.divprune import divprune_order
from omni_lab.reduction.merging import KEPT_SCORE, adjacent_merge, bipartite_merge

RATES = (0.0, 0.1, 0.37, 0.5, 0.7, 0.99)
VIDEO_GRIDS = ((1, 1, 1), (1, 2, 3), (2, 1, 1), (3, 3, 5), (5, 2, 2), (7, 1, 3))
IMAGE_GRIDS = ((1, 1, 1), (1, 3, 5), (1, 4, 4))
AUDIO_LENGTHS = (1, 2, 7, 50)


# --------------------------------------------------------------------------------------------------------------
# Items built from synthetic tensors
# --------------------------------------------------------------------------------------------------------------


def video_tokens(tubelets, rows, cols, width, height, frame_indices):
    """Token-map rows of a video as `build_token_map` lays them out: 2 frames per tubelet, uniform cell boxes."""
    records = []
    for tubelet in range(tubelets):
        frames = tuple(frame_indices[2 * tubelet : 2 * tubelet + 2])
        for row in range(rows):
            for col in range(cols):
                box = (col * width / cols, row * height / rows, (col + 1) * width / cols, (row + 1) * height / rows)
                records.append(dict(row=row, col=col, tubelet=tubelet, frames=frames, x0=box[0], y0=box[1]))
                records[-1].update(x1=box[2], y1=box[3])
    return pd.DataFrame(records)


def video_item(grid, dim=8, seed=0, frames=None, frame_indices=None):
    """A video item with random embeddings; frames default to noise, two per tubelet."""
    tubelets, rows, cols = grid
    generator = torch.Generator().manual_seed(seed)
    if frames is None:
        frames = np.random.default_rng(seed).integers(0, 256, (2 * tubelets, 4 * rows, 4 * cols, 3), dtype=np.uint8)
    clip = VideoClip(frames, fps=2.0, frame_indices=list(frame_indices or range(len(frames))))
    tokens = video_tokens(tubelets, rows, cols, clip.size[0], clip.size[1], clip.frame_indices)
    embeddings = torch.randn(tubelets * rows * cols, dim, generator=generator)
    return ReductionItem("video", 0, embeddings, tuple(grid), clip, tokens)


def image_item(grid, dim=8, seed=0):
    embeddings = torch.randn(grid[1] * grid[2], dim, generator=torch.Generator().manual_seed(seed))
    return ReductionItem("image", 0, embeddings, tuple(grid))


def audio_item(length, dim=8, seed=0, index=0):
    embeddings = torch.randn(length, dim, generator=torch.Generator().manual_seed(seed))
    return ReductionItem("audio", index, embeddings, (length,))


def all_items():
    for grid in VIDEO_GRIDS:
        yield video_item(grid, seed=sum(grid))
    for grid in IMAGE_GRIDS:
        yield image_item(grid, seed=sum(grid))
    for length in AUDIO_LENGTHS:
        yield audio_item(length, seed=length)


def expected_budget(reducer, item):
    """The budget rules, written out again here."""
    total = item.num_tokens
    if isinstance(reducer, PixelDiff):
        per_tubelet = item.grid[1] * item.grid[2]
        return max(per_tubelet, int(total * (1 - reducer.rate)))
    if isinstance(reducer, UniformTemporal):
        return item.grid[1] * item.grid[2] * math.ceil(item.grid[0] / reducer.keep_every)
    if isinstance(reducer, RandomDrop) and reducer.keep_count is not None:
        return min(reducer.keep_count, total)
    return max(1, int(total * (1 - reducer.rate)))


def reducers_for(modality):
    reducers = [RandomDrop(rate) for rate in RATES] + [RandomDrop(keep_count=count) for count in (1, 3, 1000)]
    reducers += [DivPrune(rate) for rate in RATES]
    if modality == "video":
        reducers += [PixelDiff(rate) for rate in RATES] + [UniformTemporal(k) for k in (1, 2, 3, 10)]
    if modality in ("image", "video"):
        reducers += [ToMe(rate) for rate in RATES] + [ToMe(0.6, r=2)]
    if modality == "audio":
        reducers += [AudioMerge(rate) for rate in RATES]
    return reducers


def check_reduction(reducer, item, reduction):
    """The contract of base.Reduction, checked on one result."""
    total = item.num_tokens
    assert reduction.keep.dtype == torch.bool and reduction.keep.shape == (total,)
    assert int(reduction.keep.sum()) == reducer.budget(item) == expected_budget(reducer, item), (reducer, item.grid)
    if reduction.scores is not None:
        assert reduction.scores.shape == (total,) and torch.isfinite(reduction.scores).all()
    if reduction.merged_into is not None:
        merged_into = reduction.merged_into
        assert merged_into.shape == (total,)
        assert (merged_into[reduction.keep] == -1).all()
        dropped = ~reduction.keep
        assert (merged_into[dropped] >= 0).all()  # a merging reducer folds every dropped token somewhere
        assert reduction.keep[merged_into[dropped]].all()  # ... always into a kept token
        sizes = 1 + torch.bincount(merged_into[dropped], minlength=total)[reduction.keep]
        assert int(sizes.sum()) == total


# --------------------------------------------------------------------------------------------------------------
# Budgets, contract, determinism
# --------------------------------------------------------------------------------------------------------------


def test_budgets_are_exact_over_shapes_and_rates():
    checked = 0
    for item in all_items():
        for reducer in reducers_for(item.modality):
            assert isinstance(reducer, Reducer)
            check_reduction(reducer, item, reducer(item))
            checked += 1
    assert checked > 300


def test_budgets_hand_counted():
    video = video_item((3, 3, 5))  # 45 tokens, 15 per tubelet
    assert PixelDiff(0.7).budget(video) == 15  # int(45 x 0.3) = 13 < one tubelet
    assert PixelDiff(0.37).budget(video) == 28  # int(45 x 0.63) = int(28.35)
    assert PixelDiff(0.5).budget(video) == EVS(0.5).budget(video) == 22
    assert UniformTemporal(2).budget(video) == 30  # tubelets 0 and 2
    assert UniformTemporal(5).budget(video_item((7, 1, 3))) == 6  # tubelets 0 and 5
    assert DivPrune(0.37).budget(audio_item(7)) == 4  # int(7 x 0.63) = int(4.41)
    assert RandomDrop(0.99).budget(audio_item(50)) == 1  # int(0.5) = 0, at least 1
    assert ToMe(0.0).budget(image_item((1, 4, 4))) == 16
    assert AudioMerge(0.5).budget(audio_item(7)) == 3
    assert RandomDrop(keep_count=9).budget(audio_item(7)) == 7


def test_reducers_are_deterministic():
    for item in all_items():
        for reducer in reducers_for(item.modality):
            first, second = reducer(item), reducer(item)
            assert torch.equal(first.keep, second.keep), reducer
            for a, b in ((first.scores, second.scores), (first.merged_into, second.merged_into)):
                assert (a is None and b is None) or torch.equal(a, b), reducer


def test_reprs_name_the_reducer_and_its_arguments():
    assert repr(PixelDiff(0.7)) == "PixelDiff(rate=0.7)"
    assert repr(RandomDrop(0.5, seed=3)) == "RandomDrop(rate=0.5, seed=3)"
    assert repr(RandomDrop(keep_count=4)) == "RandomDrop(keep_count=4, seed=0)"
    assert repr(RandomDrop.matching(EVS(0.7), seed=2)) == "RandomDrop.matching(EVS(rate=0.7), seed=2)"
    assert repr(UniformTemporal(4)) == "UniformTemporal(keep_every=4)"
    assert repr(DivPrune(0.25)) == "DivPrune(rate=0.25)"
    assert repr(ToMe(0.5)) == "ToMe(rate=0.5)" and repr(ToMe(0.5, r=8)) == "ToMe(rate=0.5, r=8)"
    assert repr(AudioMerge(0.3)) == "AudioMerge(rate=0.3)"


# --------------------------------------------------------------------------------------------------------------
# RandomDrop and UniformTemporal
# --------------------------------------------------------------------------------------------------------------


def test_random_drop_seed_and_item_index_change_the_subset():
    item = audio_item(64)
    base = RandomDrop(0.5, seed=0)(item).keep
    assert not torch.equal(RandomDrop(0.5, seed=1)(item).keep, base)
    next_item = audio_item(64, index=1)
    assert not torch.equal(RandomDrop(0.5, seed=0)(next_item).keep, base)
    assert torch.equal(RandomDrop(0.5, seed=1)(item).keep, RandomDrop(0.5, seed=0)(next_item).keep)  # seed + index


def test_random_drop_is_uniform_over_tokens():
    item = audio_item(10)
    counts = sum(RandomDrop(keep_count=3, seed=seed)(item).keep.double() for seed in range(2000))
    frequencies = counts / 2000  # each token kept with probability 3/10
    assert (frequencies - 0.3).abs().max() < 0.05, frequencies


def test_random_drop_matching_keeps_the_other_reducers_budget():
    for grid in VIDEO_GRIDS:
        item = video_item(grid)
        for other in (EVS(0.7), PixelDiff(0.37), UniformTemporal(2), DivPrune(0.9)):
            control = RandomDrop.matching(other, seed=5)
            assert control.modalities == other.modalities
            assert int(control(item).keep.sum()) == int(other(item).keep.sum()) == other.budget(item)


def test_uniform_temporal_keeps_whole_tubelets_at_the_stride():
    item = video_item((7, 2, 2))
    keep = UniformTemporal(3)(item).keep.reshape(7, 4)
    assert keep.all(dim=1).tolist() == [True, False, False, True, False, False, True]
    assert (keep.any(dim=1) == keep.all(dim=1)).all()  # whole tubelets only
    assert UniformTemporal(1)(item).keep.all()


# --------------------------------------------------------------------------------------------------------------
# EVS
# --------------------------------------------------------------------------------------------------------------


def evs_video(grid, dtype, seed, repeat_every=0):
    """A video item whose tubelets repeat every `repeat_every` (exact ties in the scores), in `dtype`."""
    item = video_item(grid, dim=16, seed=seed)
    tubelets = item.embeddings.reshape(grid[0], -1, 16)
    if repeat_every:
        tubelets = tubelets[torch.arange(grid[0]) // repeat_every * repeat_every]  # (T, n, D)
    return ReductionItem("video", 0, tubelets.reshape(-1, 16).to(dtype), item.grid, item.media, item.tokens)


def test_evs_scores_are_the_cosine_dissimilarity_worked_in_float64():
    item = evs_video((4, 2, 3), torch.float32, seed=1)
    tubelets = item.embeddings.double().reshape(4, 6, 16)
    expected = [[255.0] * 6]
    for t in range(1, 4):
        a, b = tubelets[t], tubelets[t - 1]
        expected.append((1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).tolist())
    scores = EVS(0.5)(item).scores
    assert scores.dtype == torch.float32 and scores.shape == (24,)
    torch.testing.assert_close(
        scores.double(), torch.tensor(expected, dtype=torch.float64).reshape(-1), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_evs_scores_rank_tokens_exactly_as_the_keep_mask_keeps_them(dtype):
    """Keeping the budget's highest scores (stable descending sort: ties go to the earlier token) gives the mask.

    Repeated tubelets make exact ties (dissimilarity 0), and bfloat16 / float16 round many more scores together, so
    the tie order is exercised; the scores must be the values the mask sorts, in the embeddings' dtype.
    """
    checked = 0
    for grid in ((2, 2, 2), (3, 3, 5), (5, 2, 2), (7, 1, 3), (9, 4, 4)):
        for repeat_every in (0, 2, 3):
            item = evs_video(grid, dtype, seed=sum(grid) + repeat_every, repeat_every=repeat_every)
            for rate in RATES:
                reducer = EVS(rate)
                reduction = reducer(item)
                scores = reduction.scores
                assert scores.dtype == dtype
                order = sorted(range(item.num_tokens), key=lambda i: (-float(scores[i]), i))
                expected = torch.zeros(item.num_tokens, dtype=torch.bool)
                expected[order[: reducer.budget(item)]] = True
                assert torch.equal(reduction.keep, expected), (grid, repeat_every, rate)
                kept, dropped = scores[reduction.keep].float(), scores[~reduction.keep].float()
                assert not len(dropped) or kept.min() >= dropped.max()
                checked += 1
    assert checked == 5 * 3 * len(RATES)


# --------------------------------------------------------------------------------------------------------------
# PixelDiff
# --------------------------------------------------------------------------------------------------------------


def test_pixel_diff_scores_are_the_mean_rgb_change_worked_by_hand():
    # 5 frames 64x32 on a 2x4 grid of 16x16 cells: tubelets (f0, f1), (f2, f3), (f4) -> 3 tubelets of 8 tokens.
    frames = np.zeros((5, 32, 64, 3), np.uint8)
    frames[2, 4:12, 20:28] = 255  # 8x8 white square in cell (0, 1), in one frame of tubelet 1
    frames[4, 20:28, 52:60] = 255  # 8x8 white square in cell (1, 3), in the single frame of tubelet 2
    item = video_item((3, 2, 4), frames=frames, frame_indices=[3, 7, 11, 15, 19])
    scores = PixelDiff(0.5)(item).scores
    # tubelet 1 vs 0: cell (0, 1) changes by 0.5 on 64 of 256 pixels -> 0.125
    # tubelet 2 vs 1: cell (0, 1) changes back (0.125); cell (1, 3) by 1.0 on 64 of 256 pixels -> 0.25
    expected = [255.0] * 8 + [0, 0.125, 0, 0, 0, 0, 0, 0] + [0, 0.125, 0, 0, 0, 0, 0, 0.25]
    torch.testing.assert_close(scores, torch.tensor(expected), rtol=0, atol=1e-6)
    kept = {rate: torch.nonzero(PixelDiff(rate)(item).keep).flatten().tolist() for rate in (0.6, 0.55, 0.5)}
    assert kept[0.6] == list(range(8)) + [23]  # int(24 x 0.4) = 9
    assert kept[0.55] == list(range(8)) + [9, 23]  # 10: the tie at 0.125 goes to the earlier token
    assert kept[0.5] == list(range(8)) + [8, 9, 17, 23]  # 12: then the first unchanged token


def test_pixel_diff_needs_frames_and_token_rows():
    item = video_item((2, 1, 2))
    with pytest.raises(OmniLabInputError, match="frames"):
        PixelDiff(0.5)(ReductionItem("video", 0, item.embeddings, item.grid))


# --------------------------------------------------------------------------------------------------------------
# DivPrune
# --------------------------------------------------------------------------------------------------------------


def official_divprune(embeddings, count):
    """The loop of `DivPrune` in vbdi/divprune (LLaVA/llava/model/llava_arch.py), on the full distance matrix."""
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    distance = 1.0 - unit @ unit.T  # (N, N)
    selected = []
    for step in range(count):
        if step == 0:
            scores = torch.topk(distance, 2, dim=0, largest=False).values[1, :]
        else:
            scores = distance[selected].min(dim=0).values
        selected.append(int(torch.argmax(scores)))
    return selected


def test_divprune_matches_the_official_greedy_loop():
    for seed, (total, count) in enumerate(((40, 12), (25, 25), (9, 1), (60, 30))):
        embeddings = torch.randn(total, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        order, gains, min_distance = divprune_order(embeddings, count)
        assert order.tolist() == official_divprune(embeddings, count)
        unit = embeddings / embeddings.norm(dim=1, keepdim=True)
        distance = 1 - unit @ unit.T
        chosen = order.tolist()
        for step in range(1, count):  # each gain is the pick's distance to its nearest earlier pick
            assert gains[step].item() == pytest.approx(distance[chosen[step], chosen[:step]].min().item(), abs=1e-12)
        torch.testing.assert_close(min_distance, distance[:, chosen].min(dim=1).values, rtol=0, atol=1e-12)


def test_divprune_keeps_the_same_tokens_through_the_reducer_and_in_float32():
    embeddings = torch.randn(50, 16, generator=torch.Generator().manual_seed(3))
    reduction = DivPrune(0.75)(ReductionItem("image", 0, embeddings, (1, 5, 10)))  # keeps int(12.5) = 12
    expected = official_divprune(embeddings.double(), 12)
    assert torch.nonzero(reduction.keep).flatten().tolist() == sorted(expected)
    later_picks = reduction.scores[expected[1:]]  # dropped tokens never out-score a pick after the first
    assert later_picks.min() >= reduction.scores[~reduction.keep].max() - 1e-6


def test_divprune_never_keeps_a_duplicate_while_a_distinct_token_remains():
    generator = torch.Generator().manual_seed(4)
    palette = torch.randn(5, 12, generator=generator)
    which = torch.randperm(20, generator=generator) % 5  # 5 directions, 4 copies each
    scale = torch.rand(20, 1, generator=generator) + 0.5  # rescaled copies are identical under cosine
    item = ReductionItem("audio", 0, palette[which] * scale, (20,))
    kept = DivPrune(0.75)(item).keep  # keeps 5
    assert sorted(which[kept].tolist()) == [0, 1, 2, 3, 4]
    kept = DivPrune(0.6)(item).keep  # keeps 8: every direction, then copies
    assert set(which[kept].tolist()) == {0, 1, 2, 3, 4} and int(kept.sum()) == 8


# --------------------------------------------------------------------------------------------------------------
# ToMe and AudioMerge
# --------------------------------------------------------------------------------------------------------------


def cosine(u, v):
    return float(u @ v / (u.norm() * v.norm()))


def brute_force_tome(embeddings, count, r=None):
    """ToMe rounds on explicit member lists: A = even groups, B = odd; merge the top edges; groups in sequence order."""
    groups = [[index] for index in range(len(embeddings))]  # members; the first is the group's kept token
    while len(groups) > count:
        means = [embeddings[members].mean(dim=0) for members in groups]
        edges = []
        for a in range(0, len(groups), 2):
            similarities = [cosine(means[a], means[b]) for b in range(1, len(groups), 2)]
            best = max(range(len(similarities)), key=lambda j: (similarities[j], -j))
            edges.append((similarities[best], a, 2 * best + 1))
        merges = min(len(groups) // 2, len(groups) - count, r or len(groups))
        chosen = sorted(edges, key=lambda edge: -edge[0])[:merges]  # stable: ties keep the earlier A group
        for _, a, b in chosen:
            groups[b] = groups[b] + groups[a]
        merged_away = {a for _, a, _ in chosen}
        groups = [members for index, members in enumerate(groups) if index not in merged_away]
    return groups


def brute_force_adjacent_merge(embeddings, count):
    groups = [[index] for index in range(len(embeddings))]
    while len(groups) > count:
        means = [embeddings[members].mean(dim=0) for members in groups]
        similarities = [cosine(means[i], means[i + 1]) for i in range(len(groups) - 1)]
        best = max(range(len(similarities)), key=lambda i: (similarities[i], -i))
        groups[best] = groups[best] + groups.pop(best + 1)
    return groups


def owners(groups, total):
    """(each token's group index, each token's kept token) from member lists whose first member is kept."""
    group_of, kept_of = [None] * total, [None] * total
    for index, members in enumerate(groups):
        for member in members:
            group_of[member], kept_of[member] = index, members[0]
    return group_of, kept_of


def test_tome_worked_by_hand():
    x, y = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    pairs = torch.stack([x, x + 0.01 * y, y, y + 0.01 * x])  # A = {0, 2}, B = {1, 3}: 0 joins 1, 2 joins 3
    reduction = ToMe(0.5)(ReductionItem("image", 0, pairs, (1, 2, 2)))
    assert reduction.keep.tolist() == [False, True, False, True]
    assert reduction.merged_into.tolist() == [1, -1, 3, -1]
    chain = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])  # round 1: 0 joins 1; round 2: {0, 1} joins 2
    reduction = ToMe(0.9)(ReductionItem("image", 0, chain, (1, 1, 3)))
    assert reduction.keep.tolist() == [False, False, True]
    assert reduction.merged_into.tolist() == [2, 2, -1]  # token 0's chain 0 -> 1 -> 2 is resolved
    assert reduction.scores[0] == pytest.approx(1 - cosine(chain[0], chain[1]))
    assert reduction.scores[1] == pytest.approx(1 - cosine(chain[:2].mean(0), chain[2]))
    assert reduction.scores[2] == KEPT_SCORE


@pytest.mark.parametrize("r", [None, 1, 3])
def test_tome_matches_brute_force_rounds_and_tracks_group_means(r):
    for seed, (total, count) in enumerate(((2, 1), (3, 1), (16, 8), (31, 5), (45, 13), (20, 20))):
        embeddings = torch.randn(total, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        merged = bipartite_merge(embeddings, count, r)
        groups = brute_force_tome(embeddings, count, r)
        kept = merged.kept[merged.group_of]  # (N,) each token's kept token
        assert kept.tolist() == owners(groups, total)[1]
        sizes = merged.group_of.bincount()  # (K,)
        assert len(sizes) == len(merged.kept) == count and int(sizes.sum()) == total and (sizes >= 1).all()
        reduction = merged.reduction()
        assert (reduction.merged_into[reduction.keep] == -1).all()
        for group, token in enumerate(merged.kept.tolist()):
            members = torch.nonzero(kept == token).flatten()
            torch.testing.assert_close(merged.means[group], embeddings[members].mean(dim=0), rtol=0, atol=1e-12)


def test_adjacent_merge_worked_by_hand():
    a, b, c = torch.eye(3)
    item = ReductionItem("audio", 0, torch.stack([a, a, b, b, c]), (5,))
    reduction = AudioMerge(0.4)(item)  # keeps int(5 x 0.6) = 3
    assert reduction.keep.tolist() == [True, False, True, False, True]
    assert reduction.merged_into.tolist() == [-1, 0, -1, 2, -1]
    assert reduction.scores.tolist() == [KEPT_SCORE, 0.0, KEPT_SCORE, 0.0, KEPT_SCORE]


def test_adjacent_merge_matches_brute_force_and_groups_stay_contiguous():
    for seed, (total, count) in enumerate(((2, 1), (7, 3), (40, 9), (60, 1), (25, 24))):
        embeddings = torch.randn(total, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        merged = adjacent_merge(embeddings, count)
        groups = brute_force_adjacent_merge(embeddings, count)
        assert merged.kept.tolist() == [members[0] for members in groups]
        assert merged.group_of.tolist() == owners(groups, total)[0]
        reduction = AudioMerge(1 - (count + 0.5) / total)(ReductionItem("audio", 0, embeddings, (total,)))
        assert int(reduction.keep.sum()) == count
        kept_before = torch.where(reduction.keep, torch.arange(total), reduction.merged_into)
        assert (kept_before.diff() >= 0).all()  # contiguous runs, each after its kept first token
        assert (kept_before <= torch.arange(total)).all()
        for group, token in enumerate(merged.kept.tolist()):
            members = torch.nonzero(kept_before == token).flatten()
            assert members.tolist() == list(range(members[0], members[-1] + 1))
            torch.testing.assert_close(merged.means[group], embeddings[members].mean(dim=0), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [PixelDiff, DivPrune, ToMe, AudioMerge, RandomDrop])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, "0.5", True, float("nan")])
def test_rates_outside_0_1_are_refused(make, rate):
    with pytest.raises(OmniLabInputError, match=r"rate .*\[0, 1\)"):
        make(rate)


@pytest.mark.parametrize(
    "build",
    [
        lambda: UniformTemporal(0),
        lambda: UniformTemporal(1.5),
        lambda: UniformTemporal(True),
        lambda: RandomDrop(),
        lambda: RandomDrop(0.5, keep_count=3),
        lambda: RandomDrop(keep_count=0),
        lambda: RandomDrop(0.5, seed="a"),
        lambda: RandomDrop.matching(object()),
        lambda: ToMe(0.5, r=0),
    ],
)
def test_bad_arguments_are_refused(build):
    with pytest.raises(OmniLabInputError):
        build()


def test_wrong_modality_and_grid_are_refused():
    audio, video = audio_item(6), video_item((2, 1, 3))
    for reducer, item in ((PixelDiff(0.5), audio), (UniformTemporal(2), audio), (AudioMerge(0.5), video)):
        with pytest.raises(OmniLabInputError, match="acts on"):
            reducer(item)
    with pytest.raises(OmniLabInputError, match="acts on"):
        ToMe(0.5).budget(audio)
    with pytest.raises(OmniLabInputError, match="grid"):
        UniformTemporal(2)(ReductionItem("video", 0, torch.zeros(7, 4), (2, 1, 3)))


# --------------------------------------------------------------------------------------------------------------
# Through the model: the toy checkpoint
# --------------------------------------------------------------------------------------------------------------


def square_video():
    """8 frames 96x64 (a 3x5 grid of about 19x21 px cells): static noise, and in tubelet t (both its frames) an 8x10
    white square inside cell (row 1, col t). Tubelet t differs from t - 1 only in cells (1, t - 1) and (1, t)."""
    background = np.random.default_rng(0).integers(0, 200, (64, 96, 3), dtype=np.uint8)
    frames = np.repeat(background[None], 8, axis=0)
    for tubelet, left in enumerate((4, 24, 43, 62)):  # inside [0, 19), [19, 38), [38, 58), [58, 77)
        frames[2 * tubelet : 2 * tubelet + 2, 26:36, left : left + 8] = 255
    return VideoClip(frames, fps=4.0)


def media_rows(run, modality):
    return run.token_map.df[run.token_map.df.modality == modality]


def test_pixel_diff_in_a_run_keeps_the_cells_the_square_passes_through(toy_lab):
    prompt = toy_lab.prompt("?", video=square_video())
    run = toy_lab.run(prompt, max_new_tokens=1, reducer=ol.reducers.PixelDiff(0.64))
    video = media_rows(run, "video")
    assert len(video) == 60 and video.tubelet.max() == 3 and video.row.max() == 2 and video.col.max() == 4
    # budget max(15, int(60 x 0.36)) = 21: tubelet 0 whole, then (1, 0) (1, 1) | (1, 1) (1, 2) | (1, 2) (1, 3)
    expected = list(range(15)) + [20, 21, 36, 37, 52, 53]
    assert np.flatnonzero(video.kept.to_numpy()).tolist() == expected
    assert (video.position[~video.kept] == -1).all() and (video.position[video.kept] >= 0).all()
    assert (video.score.iloc[:15] == 255).all()


def test_every_reducer_runs_through_the_model_at_its_budget(toy_lab):
    prompt = toy_lab.prompt(
        "?", images=[np.full((64, 64, 3), 90, np.uint8)], video=square_video(), audio=(np.ones(16000) * 0.1, 16000)
    )
    plans = [
        {"video": UniformTemporal(3), "audio": AudioMerge(0.5), "image": ToMe(0.5)},
        DivPrune(0.7),
        {"video": RandomDrop.matching(PixelDiff(0.64), seed=1), "audio": RandomDrop(keep_count=4)},
    ]
    for reducer in plans:
        run = toy_lab.run(prompt, max_new_tokens=1, reducer=reducer)
        df = run.token_map.df
        counts = {modality: len(media_rows(run, modality)) for modality in ("image", "video", "audio")}
        assert counts["video"] == 60 and counts["image"] > 1 and counts["audio"] > 4
        kept = {modality: int(media_rows(run, modality).kept.sum()) for modality in counts}
        if isinstance(reducer, DivPrune):
            assert kept == {modality: max(1, int(count * 0.3)) for modality, count in counts.items()}
        elif "image" in reducer:
            assert kept == {
                "image": max(1, int(counts["image"] * 0.5)),
                "video": 15 * 2,  # tubelets 0 and 3
                "audio": max(1, int(counts["audio"] * 0.5)),
            }
            merging = df[df.modality.isin(["image", "audio"])]
            merged = merging[merging.merged_into >= 0]
            assert len(merged) == int((~merging.kept).sum()) > 0  # every dropped image/audio token was merged
            assert (df[df.modality == "video"].merged_into == -1).all()  # UniformTemporal only prunes
            targets = df.iloc[merged.merged_into.to_numpy()]
            assert targets.kept.all()
            assert (targets.modality.to_numpy() == merged.modality.to_numpy()).all()
        else:
            assert kept == {"image": counts["image"], "video": 21, "audio": 4}
        assert (df.position[~df.kept] == -1).all()
        assert run.token_map.num_positions == int(df.kept.sum())


def test_reducers_by_name_at_a_rate():
    from omni_lab import reducers

    assert repr(reducers.at_rate("evs", 0.5)) == repr(reducers.EVS(0.5))
    assert isinstance(reducers.at_rate("RandomDrop", 0.25), reducers.RandomDrop)
    assert isinstance(reducers.at_rate("random", 0.25), reducers.RandomDrop)
    assert [reducers.at_rate("uniform", rate).keep_every for rate in (0.0, 0.5, 0.75, 0.9)] == [1, 2, 4, 10]
    assert reducers.at_rate("Uniform_Temporal", 0.5).keep_every == 2
    with pytest.raises(OmniLabInputError, match="not one of"):
        reducers.at_rate("fastv", 0.5)
    with pytest.raises(OmniLabInputError, match=r"\[0, 1\)"):
        reducers.at_rate("evs", 1.0)
