"""omni_lab.attribution on the trained toy twin, checked against ShapesWorld's ground truth and independent paths.

- exact Shapley values: efficiency, and equality with a brute-force enumeration whose coalition values come from
  `lab.logits` with `ol.ablate_tokens` (the inference path and its intervention hook, not the attribution code);
- occlusion: the moving object's path above as many static cells (still shapes first) on direction clips; beep
  windows above silent windows on beep-count clips;
- modality Shapley on pitch_and_colour: video and audio both positive, the text-only preference noise around zero;
- integrated gradients: the completeness gap shrinks from 8 to 64 steps;
- text-only occlusion equals captum's own LLMAttribution(FeatureAblation) + TextTokenInput (uncached);
- input occlusion: greying an image's shape beats greying background cells;
- bad arguments get OmniLabInputError.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab.attribution import Target
from omni_lab.toy import shapesworld as sw
from omni_lab.toy.ablation import path_rows
from omni_lab.toy.canvas import COLOURS


def _clips(lab, family: str, task: str, count: int, keep=lambda example: True):
    """The first `count` held-out examples of a task (evaluation seeds, never seen in training) that pass `keep`."""
    index = 0
    while count:
        example = sw.sample(sw.eval_seed(0, family, index), family=family, task=task)
        index += 1
        if keep(example):
            count -= 1
            yield example, example.prompt(lab)


def _question_rows(prompt) -> np.ndarray:
    """Rows of the user's question: the non-special text run right before the user turn's end."""
    token_map = prompt.token_map
    text = (token_map["modality"] == "text") & ~np.asarray(token_map["special"], bool)
    end = int(np.flatnonzero(np.asarray(token_map["text"]) == "<|im_end|>")[0])
    start = end
    while start > 0 and text[start - 1] and token_map["text"][start - 1] != "\n":
        start -= 1
    rows = np.zeros(len(token_map), bool)
    rows[start:end] = True
    return rows


def test_exact_shapley_is_efficient_and_equals_brute_force(twin_lab):
    example = sw.sample(sw.eval_seed(0, "omni", 0), family="omni", task="count_and_direction")
    prompt = example.prompt(twin_lab)
    token_map = prompt.token_map
    question = _question_rows(prompt)
    labels = (token_map["modality"] == "text") & ~np.asarray(token_map["special"], bool) & ~question
    groups = {
        "video": token_map.rows(modality="video"),
        "audio": token_map.rows(modality="audio"),
        "question": question,
        "labels": labels,
    }
    target = Target(example.answer, tokens="first")
    result = ol.attribution.modality_shapley(twin_lab, prompt, target, groups=groups, baseline="zero", progress=False)

    first = twin_lab.tokenizer(example.answer, add_special_tokens=False)["input_ids"][0]
    names = list(groups)

    def value(present: frozenset) -> float:
        absent = np.zeros(len(token_map), bool)
        for name in names:
            if name not in present:
                absent |= groups[name]
        interventions = [ol.ablate_tokens(absent)] if absent.any() else None
        logits = twin_lab.logits(prompt, reducer=None, interventions=interventions)
        return float(torch.log_softmax(logits[0, -1].double(), dim=-1)[first])

    values = {
        frozenset(subset): value(frozenset(subset))
        for size in range(len(names) + 1)
        for subset in itertools.combinations(names, size)
    }
    n = len(names)
    brute = []
    for name in names:
        others = [other for other in names if other != name]
        total = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                total += weight * (values[frozenset(subset) | {name}] - values[frozenset(subset)])
        brute.append(total)
    everything, nothing = values[frozenset(names)], values[frozenset()]
    print("captum", result.unit_scores, "brute force", brute)
    assert result.units.labels == names
    torch.testing.assert_close(
        torch.tensor(result.unit_scores), torch.tensor(brute, dtype=torch.float64), atol=2e-4, rtol=0
    )
    # exact up to float32 rounding: values near 10 carry ~1e-6 each (an ulp there), 4 units and 16 coalitions
    assert abs(result.unit_scores.sum() - (result.target_value - result.baseline_value)) < 1e-5
    assert abs(result.unit_scores.sum() - (everything - nothing)) < 2e-4
    assert abs(result.completeness_gap) < 1e-5  # float32 logits of values near 20
    assert result.forward_passes == 2**n
    control = (token_map["modality"] == "text") & np.asarray(token_map["special"], bool)  # <|im_start|>, <img>, ...
    assert np.isnan(result.scores[control]).all()
    assert np.allclose(result.scores[groups["audio"]], result.unit_scores[1])


def _static_cells(prompt, truth, on_path: np.ndarray) -> np.ndarray:
    """As many video cells as `on_path` holds (every tubelet), off the path: still shapes first, then background."""
    token_map = prompt.token_map
    video = np.flatnonzero(token_map.rows(modality="video"))
    cols = int(token_map["col"][video].max()) + 1
    cells = token_map["row"][video] * cols + token_map["col"][video]
    path_cells = np.unique(cells[on_path[video]])
    on_shape = np.zeros(len(video), bool)
    for shape in truth.distractors:
        on_shape |= token_map.box_overlap(shape.box)[video] > 0
    shape_cells = np.setdiff1d(np.unique(cells[on_shape]), path_cells)
    background = np.setdiff1d(np.unique(cells), np.union1d(path_cells, shape_cells))
    chosen = np.concatenate([shape_cells, background])[: len(path_cells)]
    mask = np.zeros(len(token_map), bool)
    mask[video[np.isin(cells, chosen)]] = True
    return mask


@pytest.mark.slow
def test_occlusion_scores_the_moving_path_above_static_shapes(twin_lab):
    """50 held-out clips with a moving object; the target is the answer's log-odds against "none"."""
    wins, scores = 0, []
    for example, prompt in _clips(twin_lab, "video", "direction", 50, lambda e: e.truth["video"].moves):
        truth = example.truth["video"]
        on_path = path_rows(prompt, truth)
        static = _static_cells(prompt, truth, on_path)
        assert static.sum() == on_path.sum()
        result = ol.attribution.occlusion(
            twin_lab,
            prompt,
            Target(example.answer, alternative="none"),
            unit={"path": on_path, "static": static},
            baseline="remove",
            progress=False,
        )
        scores.append(result.unit_scores)
        wins += result.unit_scores[0] > result.unit_scores[1]
    print("path vs static occlusion scores", np.round(scores, 2).tolist())
    assert wins >= 45, f"path above static on {wins} of 50 clips"


def test_occlusion_scores_beep_windows_above_silent_windows(twin_lab):
    """Beep-count clips with 2+ beeps (with one beep, removing it leaves "1", the twin's answer for no beep)."""
    wins, clips = 0, 0
    for example, prompt in _clips(twin_lab, "audio", "beep_count", 20, lambda e: len(e.truth["audio"].beeps) >= 2):
        beeps = example.truth["audio"].beeps
        result = ol.attribution.occlusion(
            twin_lab, prompt, example.answer, unit="audio_window", seconds=0.25, baseline="remove", progress=False
        )
        table = result.to_frame()
        has_beep = np.array(
            [
                any(min(t1, end) > max(t0, start) for start, end in beeps)
                for t0, t1 in zip(table.t0, table.t1, strict=True)
            ]
        )
        if has_beep.all():
            continue
        clips += 1
        wins += table.score[has_beep].mean() > table.score[~has_beep].mean()
    assert clips >= 18
    assert wins >= 0.9 * clips, f"beep windows above silent windows on {wins} of {clips} clips"


@pytest.mark.slow
def test_modality_shapley_pitch_and_colour(twin_lab):
    """Video (colour) and audio (pitch) both add to log p(answer) - log p(other pitch, other colour); the question
    alone names neither, so the text-only prompt's preference is noise that averages out over the clips."""
    colours = list(COLOURS)
    text_only, full = [], []
    for example, prompt in _clips(twin_lab, "omni", "pitch_and_colour", 8):
        pitch, colour = example.answer.split(", ")
        alternative = f"{'high' if pitch == 'low' else 'low'}, {colours[(colours.index(colour) + 1) % len(colours)]}"
        result = ol.attribution.modality_shapley(
            twin_lab,
            prompt,
            Target(example.answer, alternative=alternative),
            modality=("video", "audio"),
            progress=False,
        )
        assert result.units.labels == ["video", "audio"]
        video, audio = result.unit_scores
        assert video > 0 and audio > 0, (example, result.unit_scores)
        assert abs(result.completeness_gap) < 1e-5  # float32 logits of values near 20
        text_only.append(result.baseline_value)
        full.append(result.target_value)
    print("f(text only)", np.round(text_only, 2), "f(all)", np.round(full, 2))
    assert abs(np.mean(text_only)) < 0.15 * np.mean(full)


def test_integrated_gradients_completeness_gap_shrinks_with_steps(twin_lab):
    example = sw.sample(sw.eval_seed(0, "audio", 7), family="audio", task="beep_count")
    prompt = example.prompt(twin_lab)
    gaps = {}
    for steps in (8, 64):
        result = ol.attribution.integrated_gradients(
            twin_lab, prompt, example.answer, n_steps=steps, method="riemann_trapezoid", progress=False
        )
        gaps[steps] = result.completeness_gap
        total = np.nansum(result.scores)
        assert abs(total - (result.target_value - result.baseline_value) - result.completeness_gap) < 1e-3
        assert np.isfinite(result.scores[result.token_map["kept"]]).all()
    print("completeness gaps", gaps)
    assert abs(gaps[64]) < abs(gaps[8])

    projector = ol.attribution.integrated_gradients(twin_lab, prompt, example.answer, n_steps=4, at="projector")
    audio = projector.token_map.rows(modality="audio")
    assert np.isfinite(projector.scores[audio]).all() and np.isnan(projector.scores[~audio]).all()
    assert projector.to_frame().set_index("unit").score.isna()["text"]
    difference = projector.target_value - projector.baseline_value
    assert abs(np.sum(projector.scores[audio]) - difference - projector.completeness_gap) < 1e-3


def test_text_occlusion_equals_captum_llm_attribution(twin_lab):
    example = sw.sample(sw.eval_seed(0, "text", 1), family="text", task="opposite")
    prompt = example.prompt(twin_lab)
    baseline = twin_lab.tokenizer.unk_token_id
    ours = ol.attribution.occlusion(
        twin_lab, prompt, example.answer, unit="text_token", baseline=baseline, progress=False
    )

    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    tokenizer = twin_lab.tokenizer
    ids = prompt.input_ids[0].tolist()
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert tokenizer.encode(text) == ids
    special = sorted({int(i) for i in np.asarray(prompt.token_map["token_id"])[prompt.token_map["special"]]})
    oracle = LLMAttribution(FeatureAblation(twin_lab.model), tokenizer).attribute(
        TextTokenInput(text, tokenizer, baselines=baseline, skip_tokens=special),
        target=torch.tensor(tokenizer(example.answer, add_special_tokens=False)["input_ids"]),
        use_cached_outputs=False,
    )
    expected = oracle.seq_attr.double()
    print("ours", np.round(ours.unit_scores, 4), "captum", np.round(expected.numpy(), 4))
    torch.testing.assert_close(torch.tensor(ours.unit_scores), expected, atol=2e-4, rtol=1e-4)
    assert expected.abs().max() > 0.1  # the prompt's words matter: the comparison is not between zeros
    packaged = ol.attribution.text_attribution(twin_lab, prompt, example.answer, baseline=baseline)
    torch.testing.assert_close(torch.tensor(packaged.unit_scores), expected, atol=1e-9, rtol=0)


def test_input_occlusion_greys_the_shape_above_the_background(twin_lab):
    """Colour questions whose shape lies inside one grid cell: greying that cell removes the shape, and it scores
    above every other cell. (A shape split over cells is not tested cell by cell: the twin still reads the colour
    from the part left showing, so no single cell need matter.)"""
    checked = 0
    for example, prompt in _clips(twin_lab, "image", "colour", 12):
        x0, y0, x1, y1 = example.truth["image"].shapes[0].box
        grid = ol.attribution.build_units(prompt.token_map, "region", grid=(2, 2)).units  # cells, by geometry alone
        touches = np.array([u.box[0] < x1 and u.box[2] > x0 and u.box[1] < y1 and u.box[3] > y0 for u in grid])
        if touches.sum() != 1:
            continue
        result = ol.attribution.input_occlusion(
            twin_lab, prompt, example.answer, unit="region", grid=(2, 2), progress=False
        )
        table = result.to_frame()
        assert list(table.unit) == [u.label for u in grid]
        assert table.score[touches].max() > table.score[~touches].max(), table[["unit", "score"]]
        assert result.details["encoder_runs"] == len(table)
        checked += 1
    assert checked >= 3


def test_bad_arguments_are_refused(twin_lab):
    prompt = sw.sample(sw.eval_seed(0, "audio", 7), family="audio", task="beep_count").prompt(twin_lab)
    attribution = ol.attribution
    cases = [
        lambda: attribution.occlusion(twin_lab, prompt, "2", unit="paragraph"),
        lambda: attribution.occlusion(twin_lab, prompt, "2", unit={"nothing": np.zeros(len(prompt.token_map), bool)}),
        lambda: attribution.occlusion(twin_lab, prompt, "2", unit={}),
        lambda: attribution.occlusion(twin_lab, prompt, "2", unit="region"),  # no image or video in this prompt
        lambda: attribution.occlusion(twin_lab, prompt, "2", baseline="blur"),
        lambda: attribution.occlusion(twin_lab, prompt, "", unit="audio_window"),
        lambda: attribution.occlusion(twin_lab, prompt, [10**7], unit="audio_window"),
        lambda: attribution.occlusion(twin_lab, prompt, Target("2", alternative="2"), unit="audio_window"),
        lambda: attribution.occlusion(twin_lab, prompt, Target("2", tokens="middle"), unit="audio_window"),
        lambda: attribution.occlusion(twin_lab, prompt, "2", unit="audio_window", seconds=0),
        lambda: attribution.occlusion(twin_lab, prompt, "2", unit="text_token", budget=3),
        lambda: attribution.modality_shapley(twin_lab, prompt, "2", groups="text_token"),
        lambda: attribution.integrated_gradients(twin_lab, prompt, "2", at="logits"),
        lambda: attribution.integrated_gradients(twin_lab, prompt, "2", baseline="remove"),
        lambda: attribution.input_occlusion(twin_lab, prompt, "2", unit="tubelet"),
        lambda: attribution.text_attribution(twin_lab, prompt, "2"),
    ]
    for case in cases:
        with pytest.raises(ol.OmniLabInputError):
            case()
    with pytest.raises(ol.OmniLabInputError, match="forward passes, over the budget of 3.*word"):
        attribution.occlusion(twin_lab, prompt, "2", unit="text_token", budget=3)
