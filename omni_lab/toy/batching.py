"""Training batches for the toy twin, built from the same prompts and merge code that `Lab.run` uses.

Each example becomes a prompt through `lab.prompt` (the model's own processor and chat template) followed by its answer
tokens and the end-of-turn token. The media of a whole batch are encoded together with the model's own encoders
(`get_image_features` on the packed images, `get_video_features` on every tubelet of every clip, `get_audio_features` on
the padded clips with their masks), split back per example and written into each prompt by
`omni_lab.forward.merge_embeddings`, exactly as a run does; EVS augmentation prunes with `omni_lab.forward.apply_reducers`.
Sequences are right-padded. The LLM is causal (attention and the Mamba-2 scan), so real positions never see the padding
and no attention mask is needed; the loss reads only the answer positions. tests/test_toy_training.py checks both
claims against the public path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import forward
from ..reduction import EVS
from .shapesworld import Example


@dataclass
class PreparedExample:
    """An example's prompt (from `lab.prompt`) and the ids it should produce: answer tokens then `<|im_end|>`.

    `word_targets[i]` says whether `target_ids[i]` spells part of a word or number of the answer (not punctuation,
    not the end of turn): the targets a stage with label smoothing smooths.
    """

    example: Example
    prompt: object
    target_ids: list[int]
    word_targets: list[bool]


@dataclass
class Batch:
    """Padded LLM inputs and where to read the loss.

    Attributes:
        embeds: `(B, L, D)` merged embeddings, right-padded with zeros.
        lengths: `(B,)` real length of each row.
        loss_rows, loss_positions: `(N,)` the row and position whose logits predict `loss_targets` `(N,)`.
        loss_words: `(N,)` bool, the targets that spell an answer word (`PreparedExample.word_targets`).
        kept_video_tokens: video tokens the LLM saw per example (after EVS augmentation), -1 without video.
        keeps: each example's keep mask over its prompt's token-map rows (a kept row's position in the sequence is
            `cumsum(keep) - 1` at that row).
        encoded: each example's post-projector media features (before any pruning), for auxiliary losses.
    """

    embeds: torch.Tensor
    lengths: torch.Tensor
    loss_rows: torch.Tensor
    loss_positions: torch.Tensor
    loss_targets: torch.Tensor
    loss_words: torch.Tensor
    kept_video_tokens: list[int]
    keeps: list
    encoded: list


def prepare(lab, examples: list[Example]) -> list[PreparedExample]:
    """Build each example's prompt with `lab.prompt` (thinking off) and tokenise its answer."""
    tokenizer = lab.tokenizer
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prepared = []
    for example in examples:
        answer_ids = tokenizer(example.answer, add_special_tokens=False)["input_ids"]
        words = [any(character.isalnum() for character in tokenizer.decode([i])) for i in answer_ids]
        prepared.append(PreparedExample(example, example.prompt(lab), [*answer_ids, end_of_turn], [*words, False]))
    return prepared


def encode_batch(model, prompts: list) -> list[forward.EncodedMedia]:
    """Encode the media of many prompts in one call per modality; returns each prompt's `EncodedMedia`."""
    device = model.get_input_embeddings().weight.device
    encoded = [forward.EncodedMedia(prompt) for prompt in prompts]
    with_images = [i for i, p in enumerate(prompts) if p.images]
    if with_images:
        pixels = torch.cat([prompts[i].inputs["pixel_values"] for i in with_images]).to(device)
        grids = torch.cat([prompts[i].inputs["image_grid_hw"] for i in with_images]).to(device)
        features = iter(model.get_image_features(pixels, grids).pooler_output)
        for i in with_images:
            encoded[i].images = [next(features) for _ in prompts[i].images]
    with_video = [i for i, p in enumerate(prompts) if p.videos]
    if with_video:
        clips = [prompts[i].inputs["pixel_values_videos"] for i in with_video]  # each (1, T_i, 2C, H, W)
        if any(clip.shape[0] != 1 for clip in clips):
            raise ValueError("training prompts carry one video each")
        tubelets = torch.cat(clips, dim=1).to(device)  # (1, sum T_i, 2C, H, W): tubelets are encoded independently
        features = model.get_video_features(tubelets).pooler_output[0]
        sizes = [int(clip.shape[1]) * features.shape[0] // tubelets.shape[1] for clip in clips]
        for i, chunk in zip(with_video, torch.split(features, sizes), strict=True):
            encoded[i].videos = [chunk]
    with_audio = [i for i, p in enumerate(prompts) if p.audios]
    if with_audio:
        features = [prompts[i].inputs["input_features"] for i in with_audio]  # each (1, F_i, mels)
        masks = [prompts[i].inputs["input_features_mask"] for i in with_audio]
        if any(f.shape[0] != 1 for f in features):
            raise ValueError("training prompts carry one audio clip each")
        frames = max(f.shape[1] for f in features)
        padded = torch.cat([torch.nn.functional.pad(f, (0, 0, 0, frames - f.shape[1])) for f in features])
        mask = torch.cat([torch.nn.functional.pad(m, (0, frames - m.shape[1])) for m in masks])
        output = model.get_audio_features(padded.to(device), mask.to(device)).pooler_output
        counts = [int(prompts[i].token_map.rows(modality="audio").sum()) for i in with_audio]
        for i, chunk in zip(with_audio, torch.split(output, counts), strict=True):
            encoded[i].audios = [chunk]
    return encoded


def merged_embeddings(
    model, prepared: list[PreparedExample], evs_rates: list[float] | None = None, encoded: list | None = None
) -> list:
    """Per example: `(1, L_i, D)` prompt embeddings as `Lab.run` builds them (optionally EVS-pruned) and the keep mask.

    Args:
        prepared: from `prepare`.
        evs_rates: per example, an EVS rate to prune its video with (0 or None: no pruning).
        encoded: the examples' `EncodedMedia` when already computed (default: `encode_batch`).
    Returns:
        list of `(embeds, keep)` with `keep` a bool numpy mask over the prompt's rows.
    """
    prompts = [item.prompt for item in prepared]
    encoded = encoded if encoded is not None else encode_batch(model, prompts)
    results = []
    for index, (prompt, media) in enumerate(zip(prompts, encoded, strict=True)):
        embeds = forward.merge_embeddings(model, prompt, media)
        rate = evs_rates[index] if evs_rates else 0.0
        reducers = {"video": EVS(rate)} if rate and prompt.videos else {}
        reduced = forward.apply_reducers(embeds, prompt, media, reducers)
        results.append((reduced.embeds, reduced.keep))
    return results


def build_batch(model, prepared: list[PreparedExample], evs_rates: list[float] | None = None) -> Batch:
    """Merged prompt embeddings + teacher-forced answer embeddings, right-padded, with the loss positions."""
    embedding = model.get_input_embeddings()
    rows = []
    loss_rows, loss_positions, loss_targets, loss_words, kept_video = [], [], [], [], []
    encoded = encode_batch(model, [item.prompt for item in prepared])
    merged = merged_embeddings(model, prepared, evs_rates, encoded)
    for index, (item, (embeds, keep)) in enumerate(zip(prepared, merged, strict=True)):
        answer = torch.tensor(item.target_ids[:-1], dtype=torch.long, device=embeds.device)
        sequence = torch.cat([embeds[0], embedding(answer)]) if len(answer) else embeds[0]
        rows.append(sequence)
        first = embeds.shape[1] - 1  # the last prompt position predicts the first answer token
        for offset, (target, word) in enumerate(zip(item.target_ids, item.word_targets, strict=True)):
            loss_rows.append(index)
            loss_positions.append(first + offset)
            loss_targets.append(target)
            loss_words.append(word)
        video_rows = item.prompt.token_map.rows(modality="video")
        kept_video.append(int((keep & video_rows).sum()) if video_rows.any() else -1)
    lengths = torch.tensor([row.shape[0] for row in rows])
    padded = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    return Batch(
        embeds=padded,
        lengths=lengths,
        loss_rows=torch.tensor(loss_rows),
        loss_positions=torch.tensor(loss_positions),
        loss_targets=torch.tensor(loss_targets),
        loss_words=torch.tensor(loss_words, dtype=torch.bool),
        kept_video_tokens=kept_video,
        keeps=[keep for _, keep in merged],
        encoded=encoded,
    )


def answer_logits(model, batch: Batch) -> torch.Tensor:
    """`(N, vocab)` logits at the batch's loss positions (the LM head runs on those positions only)."""
    language_model = model.language_model
    hidden = language_model.model(inputs_embeds=batch.embeds).last_hidden_state  # (B, L, D)
    return language_model.lm_head(hidden[batch.loss_rows, batch.loss_positions])


def answer_logits_and_hidden(model, batch: Batch, layer):
    """`answer_logits` and the `(B, L, D)` residual stream after LLM layer `layer` (or {layer: that} for a tuple of
    layers), from the same forward (forward hooks on those layers, removed before returning)."""
    layers = (layer,) if isinstance(layer, int) else tuple(layer)
    captured = {}
    handles = [
        model.language_model.model.layers[index].register_forward_hook(
            lambda module, inputs, output, index=index: captured.__setitem__(index, output)
        )
        for index in layers
    ]
    try:
        logits = answer_logits(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return logits, (captured[layer] if isinstance(layer, int) else captured)
