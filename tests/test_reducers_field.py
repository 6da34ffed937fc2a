"""VisionZip, PyramidDrop, SparseVLM and the Downsample control, each against a selection worked out by hand on
`random:small` (the vision tower's attention from its eager weights, the LLM run block by block), plus their budgets,
names, pickling and the pipeline seams they use."""

import math
import pickle

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.forward import encode_media, merge_embeddings
from omni_lab.media import VideoClip
from omni_lab.reduction import Downsample, PyramidDrop, SparseVLM, VisionZip
from omni_lab.reduction.downsample import image_grid_for, prompt_items
from tests import synth


@pytest.fixture(scope="module")
def media_prompt(small_lab):
    # one 64 x 64 image (8 x 8 patches -> 4 x 4 = 16 tokens), a 4-frame video (2 tubelets of 6 x 10 tokens)
    return small_lab.prompt(
        "Which way does the square move?",
        images=[synth.image_array(64, 64)],
        video=VideoClip(synth.moving_square_frames(4, 96, 64), fps=2.0),
    )


def positions_of(prompt, modality):
    modality_by_position = prompt.token_map.df.sort_values("position").modality.to_numpy()
    return np.flatnonzero(modality_by_position == modality)


# ------------------------------------------------------------------------------------------------------ VisionZip
def cls_attention_by_hand(small_lab, pixel_values, grid_hw=None):
    """Per sequence: the last block's attention from the CLS tokens to each patch, written out from the block's input
    (its own norm and projections, an explicit softmax over the sequence), summed over heads and averaged over the
    CLS tokens; and the block's head-mean keys. Both per patch, in the tower's patch order."""
    vision = small_lab.model.vision_model
    config = vision.config
    block = vision.encoder.layer[-1]
    seen = {}
    handle = block.register_forward_pre_hook(lambda module, args: seen.setdefault("input", args[0]))
    try:
        with torch.no_grad():
            vision(pixel_values, image_grid_hw=grid_hw)
    finally:
        handle.remove()
    with torch.no_grad():
        normed = block.norm1(seen["input"])  # (sequences, S, d)
        heads = config.num_attention_heads
        q = block.attention.q_proj(normed).unflatten(-1, (heads, -1))  # (sequences, S, H, d_h)
        k = block.attention.k_proj(normed).unflatten(-1, (heads, -1))
    cls, prefix = config.num_cls_tokens, config.num_summary_tokens
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * block.attention.scaling
    weights = torch.softmax(scores, dim=-1)  # (sequences, H, S, S)
    received = weights[:, :, :cls, prefix:].sum(dim=1).mean(dim=1)  # (sequences, patches)
    return received, k[:, prefix:].mean(dim=2)


def token_signals(received, keys, rows, cols):
    """Pool patches (2r..2r+1, 2c..2c+1) into token (r, c), row-major, by explicit loops."""
    attention, metric = [], []
    grid = received.reshape(rows, cols)
    key_grid = keys.reshape(rows, cols, -1)
    for r in range(rows // 2):
        for c in range(cols // 2):
            cells = [(2 * r, 2 * c), (2 * r, 2 * c + 1), (2 * r + 1, 2 * c), (2 * r + 1, 2 * c + 1)]
            attention.append(sum(float(grid[y, x]) for y, x in cells))
            metric.append(torch.cat([key_grid[y, x] for y, x in cells]))
    return np.array(attention), torch.stack(metric)


def visionzip_by_hand(attention, metric, keep_count):
    """VisionZip's official selection, written out: dominant by attention, contextual targets every step-th."""
    total = len(attention)
    contextual = (
        0 if keep_count >= total or keep_count < 2 else min(keep_count - 1, max(1, round(keep_count * 10 / 64)))
    )
    dominant = keep_count - contextual
    order = sorted(range(total), key=lambda i: (-attention[i], i))
    kept = set(order[:dominant])
    merged_into = [-1] * total
    rest = [i for i in range(total) if i not in kept]
    if contextual:
        step = max(1, len(rest) // contextual)
        targets = [rest[j] for j in range(0, len(rest), step)][:contextual]
        unit = torch.nn.functional.normalize(metric.float(), dim=-1)
        for i in rest:
            if i in targets:
                continue
            similarities = [float(unit[i] @ unit[t]) for t in targets]
            merged_into[i] = targets[int(np.argmax(similarities))]
        kept |= set(targets)
    return sorted(kept), merged_into


def test_visionzip_keeps_what_the_cls_attention_and_keys_choose(small_lab, media_prompt):
    inputs = media_prompt.inputs
    run = small_lab.run(media_prompt, max_new_tokens=1, reducer=VisionZip(0.5))
    token_map = run.token_map
    # image: one sequence of 8 x 8 patches
    received, keys = cls_attention_by_hand(small_lab, inputs["pixel_values"], inputs["image_grid_hw"])
    attention, metric = token_signals(received[0], keys[0], 8, 8)
    kept, merged_into = visionzip_by_hand(attention, metric, 8)
    rows = np.flatnonzero(token_map.rows(modality="image", item=0))
    assert list(np.flatnonzero(token_map["kept"][rows])) == kept
    local = np.full(len(rows), -1)
    merged = token_map["merged_into"][rows] >= 0
    local[merged] = np.searchsorted(rows, token_map["merged_into"][rows][merged])
    assert list(local) == merged_into
    np.testing.assert_allclose(token_map["score"][rows], attention, rtol=1e-4, atol=1e-6)
    # video: 2 tubelets of 12 x 20 patches (6 x 10 tokens each) compete together
    video = inputs["pixel_values_videos"]
    received, keys = cls_attention_by_hand(small_lab, video.flatten(0, 1))
    patch_rows, patch_cols = (side // 16 for side in video.shape[-2:])
    pooled = [token_signals(received[t], keys[t], patch_rows, patch_cols) for t in range(video.shape[1])]
    attention = np.concatenate([a for a, _ in pooled])
    metric = torch.cat([m for _, m in pooled])
    rows = np.flatnonzero(token_map.rows(modality="video", item=0))
    kept, merged_into = visionzip_by_hand(attention, metric, len(rows) // 2)
    assert list(np.flatnonzero(token_map["kept"][rows])) == kept
    assert int(token_map["kept"][rows].sum()) == VisionZip(0.5).budget(prompt_items(media_prompt)[("video", 0)])


def test_visionzip_signals_are_recorded_once_and_reused(small_lab, media_prompt):
    encoded = small_lab.encode(media_prompt)
    assert not encoded.signals  # plain encoding records nothing extra
    first = small_lab.prepare(media_prompt, reducer=VisionZip(0.75), encoded=encoded)
    assert {key[0] for key in encoded.signals} == set(VisionZip.signals)  # recorded into the shared encoding
    again = small_lab.prepare(media_prompt, reducer=VisionZip(0.75), encoded=encoded)
    np.testing.assert_array_equal(first.token_map["kept"], again.token_map["kept"])
    with pytest.raises(OmniLabInputError, match="encoder signals"):
        item = prompt_items(media_prompt)[("image", 0)]
        VisionZip(0.5)(item)


# ---------------------------------------------------------------------------------------------------- in the LLM
def run_by_hand(lab, embeds, stages):
    """The LLM block by block; `stages(layer, hidden, q, k, alive)` returns the kept indices (and replacements)."""
    language = lab.model.language_model
    hidden = embeds
    alive = np.arange(embeds.shape[1])
    for index, block in enumerate(language.model.layers):
        normed = block.norm(hidden)
        output = block(hidden)
        decision = stages(index, output, block, normed, alive)
        if decision is not None:
            keep, replacements = decision
            output = output.clone()
            for position, value in replacements.items():
                output[0, position] = value
            output = output[:, torch.from_numpy(keep)]
            alive = alive[keep]
        hidden = output
    return language.lm_head(language.model.norm_f(hidden))[0, -1].float(), alive


def attention_probabilities(block, normed, queries):
    mixer = block.mixer
    length = normed.shape[1]
    q = mixer.q_proj(normed).view(1, length, -1, mixer.head_dim).transpose(1, 2)
    k = mixer.k_proj(normed).view(1, length, -1, mixer.head_dim).transpose(1, 2)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) * mixer.scaling
    scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), -float("inf"))
    return torch.softmax(scores, dim=-1).mean(dim=1)[0, queries]  # (queries, L), mean over heads


def schedule(count, rate, stages):
    counts = [max(1, math.floor(count * (1 - rate) ** ((s + 1) / stages) + 1e-9)) for s in range(stages)]
    counts[-1] = max(1, math.floor(count * (1 - rate) + 1e-9))
    return counts


def test_pyramiddrop_equals_the_layers_run_by_hand(small_lab, media_prompt):
    rate, layers = 0.6, [3, 8]  # random:small's attention layers: the paper's quarter depths map onto both
    run = small_lab.run(media_prompt, max_new_tokens=1, reducer=PyramidDrop(rate), return_logits=True)
    items = {m: positions_of(media_prompt, m) for m in ("image", "video")}
    counts = {m: schedule(len(p), rate, 2) for m, p in items.items()}

    def stages(layer, output, block, normed, alive):
        if layer not in layers:
            return None
        received = attention_probabilities(block, normed, [len(alive) - 1])[0].numpy()  # the last position's
        keep = np.ones(len(alive), dtype=bool)
        for modality, positions in items.items():
            mine = np.flatnonzero(np.isin(alive, positions))
            order = mine[np.argsort(-received[mine], kind="stable")]
            keep[order[counts[modality][layers.index(layer)] :]] = False
        return keep, {}

    with torch.inference_mode():
        embeds = merge_embeddings(small_lab.model, media_prompt, encode_media(small_lab.model, media_prompt))
        logits, alive = run_by_hand(small_lab, embeds, stages)
    torch.testing.assert_close(run.logits[0], logits, rtol=0, atol=1e-4)
    dropped = run.token_map.df[run.token_map.df.dropped_at_layer >= 0]
    assert sorted(set(dropped.dropped_at_layer)) == layers
    survivors = run.token_map.df[(run.token_map.df.dropped_at_layer < 0) & (run.token_map.df.modality != "generated")]
    assert sorted(survivors.position) == list(alive)
    summary = run.ledger.stages
    assert summary[summary.stage == "after LLM layer 8"].set_index("modality").count_out.to_dict() == {
        "image": counts["image"][-1],
        "video": counts["video"][-1],
    }


def dpc_by_hand(features, clusters):
    """DPC-kNN with loops: density from the k nearest distances, separation to the nearest denser token."""
    x = features.double()
    count = x.shape[0]
    distance = torch.cdist(x, x) / x.shape[1] ** 0.5
    density = [math.exp(-float((torch.sort(distance[i]).values[:clusters] ** 2).mean())) for i in range(count)]
    separation = []
    for i in range(count):
        denser = [j for j in range(count) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        separation.append(min(float(distance[i, j]) for j in denser) if denser else float(distance.max()))
    score = [separation[i] * density[i] for i in range(count)]
    centres = sorted(range(count), key=lambda i: (-score[i], i))[:clusters]
    assignment = [int(np.argmin([float(distance[i, c]) for c in centres])) for i in range(count)]
    for index, centre in enumerate(centres):
        assignment[centre] = index
    return centres, assignment


def test_sparsevlm_equals_the_layers_run_by_hand(small_lab, media_prompt):
    rate, layers = 0.6, [3, 8]
    run = small_lab.run(media_prompt, max_new_tokens=1, reducer=SparseVLM(rate), return_logits=True)
    items = {m: positions_of(media_prompt, m) for m in ("image", "video")}
    counts = {m: schedule(len(p), rate, 2) for m, p in items.items()}
    media = np.concatenate(list(items.values()))
    text = np.arange(media.max() + 1, len(media_prompt))
    recycled_tokens = []

    with torch.inference_mode():
        embeds = merge_embeddings(small_lab.model, media_prompt, encode_media(small_lab.model, media_prompt))
        relevance = torch.softmax(embeds[0, media].float() @ embeds[0, text].float().T, dim=1).mean(dim=0)
        raters = text[(relevance > relevance.mean()).numpy()]

        def stages(layer, output, block, normed, alive):
            if layer not in layers:
                return None
            queries = np.searchsorted(alive, raters)
            scores = attention_probabilities(block, normed, list(queries)).mean(dim=0).numpy()
            keep = np.ones(len(alive), dtype=bool)
            replacements = {}
            for modality, positions in items.items():
                mine = np.flatnonzero(np.isin(alive, positions))
                target = counts[modality][layers.index(layer)]
                if len(mine) <= target:
                    continue
                order = mine[np.argsort(-scores[mine], kind="stable")]
                # m top-scored + c clusters = target; R = int(0.3 x dropped) + 1 recycled, c = int(R / 10) + 1
                for kept in range(target - 1, 0, -1):
                    recycled = min(len(mine) - kept, int(0.3 * (len(mine) - kept)) + 1)
                    clusters = min(recycled, recycled // 10 + 1)
                    if kept + clusters <= target:
                        break
                assert kept + clusters == target
                keep[order[kept:]] = False
                pool = order[kept : kept + recycled]
                centres, assignment = dpc_by_hand(output[0, pool], clusters)
                for index, centre in enumerate(centres):
                    members = [pool[i] for i in range(len(pool)) if assignment[i] == index]
                    keep[pool[centre]] = True
                    replacements[pool[centre]] = output[0, members].float().mean(dim=0)
                    recycled_tokens.append(len(members))
            return keep, replacements

        logits, alive = run_by_hand(small_lab, embeds, stages)
    torch.testing.assert_close(run.logits[0], logits, rtol=0, atol=1e-4)
    assert max(recycled_tokens) > 1  # some cluster did merge several tokens
    survivors = run.token_map.df[(run.token_map.df.dropped_at_layer < 0) & (run.token_map.df.modality != "generated")]
    assert sorted(survivors.position) == list(alive)
    assert len(survivors[survivors.modality == "video"]) == counts["video"][-1]
    first = run.ledger.llm_stages[0]  # the recycled tokens point at their cluster's centre, which stays
    sources = np.flatnonzero(first.merged_into >= 0)
    assert len(sources) and first.keep[first.merged_into[sources]].all() and not first.keep[sources].any()


def test_in_llm_reducers_drive_the_rate_slider_path_and_refuse_blind_captures(small_lab, media_prompt):
    from omni_lab.widgets import data

    encoded = small_lab.encode(media_prompt)
    reducer = data.make_reducer("SparseVLM", 0.5)  # the widget's menu entry and slider value
    prepared = small_lab.prepare(media_prompt, reducer=reducer, encoded=encoded)  # what the slider then calls
    dropped = prepared.token_map.df.dropped_at_layer
    assert (dropped >= 0).any() and prepared.reducers["llm"] is reducer
    with pytest.raises(OmniLabInputError, match="inside the LLM"):  # a function capture cannot follow the drops
        small_lab.run(media_prompt, max_new_tokens=1, reducer=PyramidDrop(0.5), capture={"llm.layers.4.in": len})
    with pytest.raises(OmniLabInputError, match="not attention layers"):
        small_lab.run(media_prompt, max_new_tokens=1, reducer=PyramidDrop(0.5, layers=[2]))


# ---------------------------------------------------------------------------------------------------- Downsample
def test_downsample_grids_and_frames_worked_by_hand():
    assert image_grid_for(4, 4, 8) == (4, 2)  # 8 tokens: 4 x 2 and 2 x 4 tie on aspect -> more rows
    assert image_grid_for(4, 4, 12) == (4, 3)
    assert image_grid_for(4, 4, 4) == (2, 2)
    assert image_grid_for(6, 10, 30) == (5, 6)  # 30 exactly; 3 x 10 is further from 6:10 than 5 x 6
    assert image_grid_for(3, 3, 100) == (3, 3)
    from omni_lab.reduction.downsample import frames_for

    assert list(frames_for(16, 4)) == [0, 2, 4, 6, 9, 11, 13, 15]
    assert list(frames_for(5, 3)) == [0, 1, 2, 3, 4]  # 3 tubelets need all 5 frames


def test_downsample_keeps_provenance_in_the_original_media(small_lab):
    image = synth.image_array(200, 120)  # random:small: 8 x 14 patches -> 4 x 7 = 28 tokens
    clip = VideoClip(synth.moving_square_frames(9, 96, 64), fps=3.0)  # 5 tubelets of 6 x 10
    prompt = small_lab.prompt("What moves?", images=[image], video=clip)
    items = prompt_items(prompt)
    reducer = Downsample(0.5)
    assert reducer.budget(items[("image", 0)]) == 14  # floor(28 x 0.5) = 14 tokens: 2 x 7 (4 x 3 = 12 is smaller)
    run = small_lab.run(prompt, max_new_tokens=1, reducer=reducer, capture=["routing"])  # captures work
    token_map = run.token_map.df
    image_rows = token_map[token_map.modality == "image"]
    video_rows = token_map[token_map.modality == "video"]
    assert len(image_rows) == reducer.budget(items[("image", 0)])
    assert len(video_rows) == reducer.budget(items[("video", 0)]) == 2 * 60  # floor(300 x 0.5) // 60 tubelets
    # boxes tile the original 200 x 120 image; frames and seconds are the original clip's
    assert image_rows.x1.max() == pytest.approx(200) and image_rows.y1.max() == pytest.approx(120)
    assert image_rows.x0.min() == 0 and image_rows.y0.min() == 0
    frames = sorted({frame for row in video_rows.frames for frame in row})
    assert frames == [0, 3, 5, 8]  # 4 of the 9 frames, evenly spread: round(linspace(0, 8, 4))
    assert video_rows.t1.max() == pytest.approx(8 * 0.333)  # the release's index x int(1000 / fps) ms
    ledger = run.ledger
    stage = ledger.stages[(ledger.stages.modality == "video") & (ledger.stages.stage == "downsample")]
    assert tuple(stage[["count_in", "count_out"]].iloc[0]) == (300, 120)
    summary = ledger.summary().set_index("modality")
    assert summary.loc["video", "tokens"] == 300 and summary.loc["video", "pruned"] == 180
    assert run.prompt is prompt and run.routing is not None
    assert run.to_dict()["tokens_before"]["video"] == 300 and run.to_dict()["tokens_after"]["video"] == 120


def test_downsample_matching_keeps_at_most_the_other_budget(small_lab, media_prompt):
    items = prompt_items(media_prompt)
    for other in (ol.reducers.EVS(0.7), VisionZip(0.3), PyramidDrop(0.8)):
        control = Downsample.matching(other)
        for key, item in items.items():
            if key[0] in other.modalities:  # a video shows at least one tubelet
                one_tubelet = item.grid[1] * item.grid[2] if key[0] == "video" else 1
                assert control.budget(item) <= max(other.budget(item), one_tubelet)
    with pytest.raises(OmniLabInputError, match="no image or video"):
        Downsample.matching(ol.reducers.AudioMerge(0.5))


# ------------------------------------------------------------------------------------------------ shared contract
@pytest.mark.parametrize("make", [VisionZip, PyramidDrop, SparseVLM, Downsample])
def test_budgets_are_exact_in_a_run(small_lab, media_prompt, make):
    reducer = make(0.4)
    run = small_lab.run(media_prompt, max_new_tokens=1, reducer=reducer)
    items = prompt_items(media_prompt)
    df = run.token_map.df
    for (modality, index), item in items.items():
        mine = df[(df.modality == modality) & (df["item"] == index)]
        reached = mine.kept & (mine.dropped_at_layer < 0)
        assert int(reached.sum()) == reducer.budget(item), (modality, repr(reducer))


def test_names_pickling_and_rates():
    names = ol.reducers.REDUCER_NAMES
    assert {"visionzip", "pyramiddrop", "sparsevlm"} <= set(names) and "downsample" not in names
    for name in ("visionzip", "pyramiddrop", "sparsevlm", "downsample", "Vision_Zip", "Pyramid-Drop"):
        reducer = ol.reducers.at_rate(name, 0.25)
        assert reducer.rate == 0.25
        assert repr(pickle.loads(pickle.dumps(reducer))) == repr(reducer)
    control = Downsample.matching(ol.reducers.EVS(0.5))
    assert repr(pickle.loads(pickle.dumps(control))) == repr(control)
    for make in (VisionZip, PyramidDrop, SparseVLM, Downsample):
        with pytest.raises(OmniLabInputError, match="rate"):
            make(1.0)


def test_downsampled_runs_draw_in_the_playground_and_widgets(twin_lab):
    pytest.importorskip("gradio")
    from omni_lab.playground import handlers
    from omni_lab.playground.figures import figures
    from omni_lab.widgets import TokenReductionMap

    clip = VideoClip(synth.moving_square_frames(8, 128, 128), fps=8.0)
    prompt = twin_lab.prompt("Which way does the square move?", images=[synth.image_array(128, 128)], video=clip)
    run = twin_lab.run(
        prompt, max_new_tokens=2, reducer=handlers.make_reducer("downsample", 0.5), capture=handlers.captures()
    )
    reduction, routing, attention = figures(run)
    assert reduction.data and routing.data and attention.data
    stats = handlers.run_stats(twin_lab, run, 0.1, 0.2)
    assert stats["tokens_after"]["video"] == stats["tokens_before"]["video"] // 2
    assert 0 < stats["prefill_flops_saved_fraction"] < 1 and stats["equivalent_tokens"] < len(prompt)
    assert TokenReductionMap(run).figure().data
