"""Occlusion in the input media themselves, re-encoded, so the encoders' share of the effect counts.

    input_occlusion(lab, prompt, unit="region")        pixels of a grid cell greyed (images; video: every frame)
    input_occlusion(lab, prompt, unit="frame")         a video frame replaced by its neighbour (the previous frame;
                                                       the first frame by the second)
    input_occlusion(lab, prompt, unit="audio_window")  an audio window silenced (samples set to 0)

captum's FeatureAblation perturbs a vector of unit switches `(1, U)`; the forward function turns each switch
pattern into new media, rebuilds the prompt with the model's own processor (same text, same layout), runs the
encoders only for the modalities that changed (the others reuse `lab.encode(prompt)`), merges (and reduces) through
`lab.prepare`, and scores the target on batches of the resulting sequences. A unit's score is
f(prompt) - f(prompt with that part of the input occluded). Upstream: captum/attr/_core/feature_ablation.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..targets import resolve_target
from .methods import cheaper_unit
from .result import Attribution, row_scores
from .scoring import Scorer, check_batch_size, check_budget, estimate
from .units import build_units, unit_details

UNITS = {"region": "grey pixels", "frame": "neighbour frame", "audio_window": "silence"}
GREY = 128


def input_occlusion(
    lab,
    prompt,
    target=None,
    *,
    unit="region",
    grid=(4, 4),
    seconds: float = 0.5,
    modality=None,
    reducer=None,
    batch_size: int = 8,
    budget: int | None = None,
    progress: bool = True,
) -> Attribution:
    """Occlude parts of the input media one at a time (captum FeatureAblation), re-encode, score the target's drop.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` with images, video or audio.
        target: `Target`, an answer string / ids, or None for the model's own greedy answer.
        unit: "region" (a `grid` cell of each image / video greyed), "frame" (a video frame replaced by its
            neighbour) or "audio_window" (`seconds` of audio silenced).
        grid, seconds, modality: unit options (modality keeps one modality's regions, e.g. "video").
        reducer: the reducer the sequences are prepared with (default None: every token is present).
        batch_size: perturbed prompts per language-model forward pass (captum's perturbations_per_eval).
        budget: most forward passes allowed (default `scoring.BUDGET_FORWARD_PASSES`).
        progress: show a progress bar.
    Returns:
        `Attribution`; rows carry the sum of the scores of the units whose input they encode (a tubelet's tokens
        carry both of its frames' scores).
    """
    from captum.attr import FeatureAblation

    if unit not in UNITS:
        raise OmniLabInputError(
            f"input_occlusion unit={unit!r}: choose 'region' (grey pixels), 'frame' (neighbour frame) or "
            "'audio_window' (silence); occlusion(...) occludes other units in the merged embeddings"
        )
    prompt = lab.as_prompt(prompt)
    if prompt.turns:
        raise OmniLabInputError(
            "input_occlusion rebuilds the prompt from its question and media, one turn: give it a lab.prompt(...) "
            "prompt; for a conversation (lab.chat) use ol.attribution.occlusion(...) on the merged embeddings"
        )
    check_batch_size(batch_size)
    resolved = resolve_target(lab, prompt, target, reducer)
    encoded = lab.encode(prompt)
    prepared = lab.prepare(prompt, reducer=reducer, encoded=encoded)
    units = build_units(prompt.token_map, unit, grid=grid, seconds=seconds, modality=modality)
    if unit == "frame" and any(video.num_frames < 2 for video in prompt.videos):
        raise OmniLabInputError("unit='frame' replaces a frame by its neighbour: every video needs 2 frames or more")
    cost = estimate("input_occlusion", len(units), continuations=resolved.passes)
    check_budget(cost, budget, f"input occlusion over {len(units)} {unit} units", cheaper_unit(unit, grid, seconds))
    scorer = Scorer(lab, resolved, batch_size, progress, cost.forward_passes, f"input occlusion ({unit})")
    forward = MediaPerturbation(lab, prompt, encoded, units, reducer, scorer)
    try:
        attributions = FeatureAblation(forward).attribute(
            torch.ones(1, len(units), dtype=torch.float64), baselines=0.0, perturbations_per_eval=batch_size
        )
    finally:
        scorer.close()
    unit_scores = attributions[0].numpy().astype(np.float64)
    kept_units = units.restrict(prepared.token_map["kept"], drop_empty=False)
    return Attribution(
        token_map=prepared.token_map,
        scores=row_scores(prepared.token_map, kept_units, unit_scores),
        units=units,
        unit_scores=unit_scores,
        method="input_occlusion",
        target=resolved.describe(),
        baseline=UNITS[unit],
        target_value=forward.value(np.ones(len(units), dtype=bool)),
        forward_passes=scorer.forward_passes,
        details={**unit_details(units, modality), "batch_size": batch_size, "encoder_runs": forward.encoder_runs},
    )


class MediaPerturbation:
    """captum forward function: `(k, U)` unit switches -> `(k,)` target values of the re-encoded prompts.

    Args:
        lab, prompt: the `Lab` and the unperturbed `Prompt`.
        encoded: `lab.encode(prompt)` (reused for the modalities a perturbation leaves alone).
        units: the input units (each with its modality, item, box / frames / seconds).
        reducer: passed to `lab.prepare`.
        scorer: the `Scorer`.
    """

    def __init__(self, lab, prompt, encoded, units, reducer, scorer):
        self.lab = lab
        self.prompt = prompt
        self.encoded = encoded
        self.units = units
        self.reducer = reducer
        self.scorer = scorer
        self.cache: dict[bytes, float] = {}
        self.encoder_runs = 0

    def value(self, present: np.ndarray) -> float:
        self._evaluate(present[None])
        return self.cache[np.packbits(present).tobytes()]

    def __call__(self, switches: torch.Tensor) -> torch.Tensor:
        present = switches.detach().cpu().numpy() > 0.5  # (k, U)
        self._evaluate(present)
        return torch.tensor([self.cache[np.packbits(row).tobytes()] for row in present], dtype=torch.float64)

    def _evaluate(self, present: np.ndarray) -> None:
        pending = {}
        for row in present:
            key = np.packbits(row).tobytes()
            if key not in self.cache:
                pending.setdefault(key, row)
        if not pending:
            return
        prepared = [(key, self._prepare(row)) for key, row in pending.items()]
        by_length: dict[int, list] = {}
        for key, item in prepared:
            by_length.setdefault(item.embeds.shape[1], []).append((key, item))
        with torch.inference_mode():
            for group in by_length.values():
                for start in range(0, len(group), self.scorer.batch_size):
                    chunk = group[start : start + self.scorer.batch_size]
                    embeds = torch.cat([item.embeds for _, item in chunk])  # (b, L', D)
                    values = self.scorer(embeds, chunk[0][1].token_map).double().cpu().numpy()
                    for (key, _), value in zip(chunk, values, strict=True):
                        self.cache[key] = float(value)

    def _prepare(self, present: np.ndarray):
        """`lab.prepare` of the prompt with the switched-off units occluded in its media."""
        occluded = [unit for unit, on in zip(self.units, present, strict=True) if not on]
        if not occluded:
            return self.lab.prepare(self.prompt, reducer=self.reducer, encoded=self.encoded)
        perturbed, changed = occluded_prompt(self.lab, self.prompt, occluded)
        fresh = self.lab.encode(
            dataclasses.replace(
                perturbed,
                images=perturbed.images if "image" in changed else [],
                videos=perturbed.videos if "video" in changed else [],
                audios=perturbed.audios if "audio" in changed else [],
            )
        )
        self.encoder_runs += 1
        encoded = type(self.encoded)(
            perturbed,
            fresh.images if "image" in changed else self.encoded.images,
            fresh.videos if "video" in changed else self.encoded.videos,
            fresh.audios if "audio" in changed else self.encoded.audios,
        )
        return self.lab.prepare(perturbed, reducer=self.reducer, encoded=encoded)


def occluded_prompt(lab, prompt, units) -> tuple[object, set[str]]:
    """The prompt rebuilt with `units` occluded in its media, and the modalities that changed.

    Regions grey their box (in every frame of a video), frames take their neighbour's pixels, audio windows are
    silenced. The rebuilt prompt must lay its tokens out exactly as the original (same sizes, same text).
    """
    from ..media import AudioClip, VideoClip

    images = [np.array(image) for image in prompt.images]
    frames = [np.array(video.frames) for video in prompt.videos]
    waves = [np.array(audio.waveform) for audio in prompt.audios]
    changed: set[str] = set()
    for unit in units:
        changed.add(unit.modality)
        if unit.modality == "audio":
            clip = prompt.audios[unit.item]  # a window's seconds count from the clip's start (a video's clock)
            start, stop = (max(int(round((t - clip.start) * clip.sampling_rate)), 0) for t in unit.seconds)
            waves[unit.item][start:stop] = 0.0
        elif unit.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in unit.box)
            target = images[unit.item][None] if unit.modality == "image" else frames[unit.item]
            target[:, y0:y1, x0:x1] = GREY
        else:
            position = unit.frames[0]
            source = prompt.videos[unit.item].frames
            frames[unit.item][position] = source[position - 1] if position > 0 else source[1]
    rebuilt = lab.prompt(
        prompt.text,
        images=images or None,
        video=[
            VideoClip(pixels, video.fps, list(video.frame_indices), video.source, video.times)
            for pixels, video in zip(frames, prompt.videos, strict=True)
        ]
        or None,
        audio=[
            AudioClip(
                wave, audio.source, audio.original_rate, audio.original_channels, audio.padded_from, start=audio.start
            )
            for wave, audio in zip(waves, prompt.audios, strict=True)
        ]
        or None,
        system=prompt.system,
        thinking=prompt.thinking,
        reference=prompt.reference,
    )
    if not np.array_equal(rebuilt.input_ids.numpy(), prompt.input_ids.numpy()):
        raise RuntimeError("the occluded prompt's tokens differ from the original's; input occlusion cannot map it")
    return rebuilt, changed


def blank_prompt(lab, prompt):
    """The prompt with every image and video frame grey and every audio clip silent (same text, same layout)."""
    from ..media import AudioClip, VideoClip

    if prompt.turns:
        raise OmniLabInputError(
            "a grey baseline rebuilds the prompt from its question and media, one turn: give a lab.prompt(...) "
            "prompt, or use at='embeddings' for a conversation (lab.chat)"
        )
    rebuilt = lab.prompt(
        prompt.text,
        images=[np.full_like(np.array(image), GREY) for image in prompt.images] or None,
        video=[
            VideoClip(np.full_like(video.frames, GREY), video.fps, list(video.frame_indices), video.source)
            for video in prompt.videos
        ]
        or None,
        audio=[
            AudioClip(
                np.zeros_like(audio.waveform),
                audio.source,
                audio.original_rate,
                audio.original_channels,
                start=audio.start,
            )
            for audio in prompt.audios
        ]
        or None,
        system=prompt.system,
        thinking=prompt.thinking,
        reference=prompt.reference,
    )
    if not np.array_equal(rebuilt.input_ids.numpy(), prompt.input_ids.numpy()):
        raise RuntimeError("the blank prompt's tokens differ from the original's")
    return rebuilt
