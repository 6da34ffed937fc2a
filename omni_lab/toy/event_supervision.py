"""Dense auxiliary supervision of the LLM's hidden states on ShapesWorld's hard tier (training only).

The hard tier's answer lies in a few of a clip's 256-512 video tokens: a flash or an appearing shape in 1-2 tubelets.
Trained on the answer alone, the twin's LLM must find by itself which tokens hold an event and, for the sync family,
which video tokens show the moment the beep sounds, from one answer token per example. The release's LLM learned such
things from far more video than the twin can see on a CPU. So, as `supervision.TokenHeads` does for the encoders,
linear read-outs of the residual stream after LLM layer `HIDDEN_LAYER` (the MoE after the first attention layer, so a
token can have looked at the rest of the prompt) must predict what the ground truth says of every media token:

    video token   event_colour: the colour an event shows in its 32 x 32 cell during its tubelet (at least
                  `EVENT_MIN_PIXELS` drawn pixels of the flashed or appearing shape there), or none
                  event_shape: that shape's kind, or none
    audio token   flash_now (sync clips): the kind of the still shape flashing during the token's 80 ms window (at
                  least 40 ms of overlap), or none; the audio comes after the video in the prompt, so a token can see it

Only tokens the LLM saw are read (after the EVS augmentation), at their positions in the reduced sequence. "none" is
weighted `NONE_WEIGHT`: events fill about 1% of the video tokens. The read-outs are not part of the checkpoint.

The twin's LLM has no positional encoding, and the sync family and flash_time need a sense of time: when a token
happens on the clip's clock. A video token can learn it from its tubelet's frame label ("Frame 9 sampled at 1.00
seconds ..." is one added token); an audio token only by counting from `<so_start>`, which the Mamba layers can do
but the answer alone never asked of them: stage 3, with the read-outs above, left both sync tasks at chance and
flash_time at 20%. So stage 4 (`training.TIMING`) also reads the clock, earlier, after layer `TIME_LAYER` (the second
Mamba layer, before the first attention layer that must match an audio token to the video tokens of its moment):

    video and audio token   half_second: the half second its window starts in (0-15: clips are at most 8 s)
    video token             third: the third of the clip its tubelet lies in (what flash_time asks)
"""

from __future__ import annotations

import numpy as np
import torch

from .supervision import COLOUR_CLASSES, SHAPE_CLASSES, covered_pixels

HIDDEN_LAYER = 4  # LLM layers MEM*EMEM*E: read after the MoE that follows the first attention layer
EVENT_MIN_PIXELS = 16
FLASH_MIN_SECONDS = 0.04
NONE_WEIGHT = 0.05
EVENT_CLASSES = {"event_colour": COLOUR_CLASSES, "event_shape": SHAPE_CLASSES, "flash_now": SHAPE_CLASSES}
TIME_LAYER = 2  # after the second Mamba layer, before the first attention layer (3)
HALF_SECONDS = 16  # 8 s clips at most
TIME_CLASSES = {"half_second": tuple(range(HALF_SECONDS)), "third": ("early", "middle", "late")}
READ_LAYERS = {**dict.fromkeys(EVENT_CLASSES, HIDDEN_LAYER), **dict.fromkeys(TIME_CLASSES, TIME_LAYER)}


def event_targets(prompt, truth) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(video rows, {"event_colour", "event_shape"}: class per video token of the prompt's clip)."""
    token_map = prompt.token_map
    rows = np.flatnonzero(token_map.rows(modality="video", item=0))
    colours = np.zeros(len(rows), dtype=np.int64)
    shapes = np.zeros(len(rows), dtype=np.int64)
    tubelets = token_map["tubelet"][rows]
    for event in truth.events:
        during = np.isin(tubelets, event.tubelets)
        shown = covered_pixels(token_map, rows, event.shape.shape, event.shape.box) >= EVENT_MIN_PIXELS
        colours[during & shown] = COLOUR_CLASSES.index(event.shape.colour)
        shapes[during & shown] = SHAPE_CLASSES.index(event.shape.shape)
    return rows, {"event_colour": colours, "event_shape": shapes}


def flash_now_targets(prompt, truth) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(audio rows, {"flash_now": class per audio token}): which still shape flashes during each 80 ms window."""
    token_map = prompt.token_map
    rows = np.flatnonzero(token_map.rows(modality="audio", item=0))
    t0, t1 = token_map["t0"][rows], token_map["t1"][rows]
    kinds = np.zeros(len(rows), dtype=np.int64)
    for event in truth.events:
        if event.kind != "flash":
            continue
        start, end = event.seconds
        kinds[(np.minimum(t1, end) - np.maximum(t0, start)) >= FLASH_MIN_SECONDS] = SHAPE_CLASSES.index(
            event.shape.shape
        )
    return rows, {"flash_now": kinds}


def time_targets(prompt, truth) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """[(video rows, {"half_second", "third"}), (audio rows, {"half_second"})]: when each media token happens."""
    token_map = prompt.token_map
    pairs = []
    for modality in ("video", "audio"):
        rows = np.flatnonzero(token_map.rows(modality=modality, item=0))
        if not len(rows):
            continue
        start = token_map["t0"][rows]
        labels = {"half_second": np.clip((start * 2).astype(np.int64), 0, HALF_SECONDS - 1)}
        if modality == "video":
            labels["third"] = np.clip((3 * token_map["tubelet"][rows]) // max(1, truth.num_frames // 2), 0, 2)
        pairs.append((rows, labels))
    return pairs


class EventHeads(torch.nn.Module):
    """Linear read-outs of RMS-normalised hidden states, one per `EVENT_CLASSES` attribute (training only)."""

    def __init__(self, hidden_size: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.weights = torch.nn.ParameterDict(
            {
                name: torch.nn.Parameter(torch.randn(len(classes), hidden_size, generator=generator) * 0.02)
                for name, classes in {**EVENT_CLASSES, **TIME_CLASSES}.items()
            }
        )

    def logits(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        """`(N, classes)` for `(N, D)` hidden states."""
        normalised = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)
        return normalised @ self.weights[name].T

    def loss(self, prepared, keeps: list[np.ndarray], hidden, timing: bool = False) -> torch.Tensor:
        """Mean weighted cross-entropy over every (token, attribute) target of a batch of hard-tier examples.

        Args:
            prepared: the batch's `batching.PreparedExample`s (examples with "events" truth; others are skipped).
            keeps: each example's keep mask over its prompt rows (`batching.Batch.keeps`).
            hidden: `(B, L, D)` residual stream after layer `HIDDEN_LAYER` for the batch's padded sequences, or
                {layer: that} holding every layer of `READ_LAYERS` that is read.
            timing: also read the clock (`TIME_CLASSES`, after `TIME_LAYER`).
        Returns:
            scalar loss (0 when no example has targets).
        """
        if not isinstance(hidden, dict):
            hidden = {HIDDEN_LAYER: hidden}
        names = {**EVENT_CLASSES, **(TIME_CLASSES if timing else {})}
        device = hidden[HIDDEN_LAYER].device
        features: dict[str, list] = {name: [] for name in names}
        targets: dict[str, list] = {name: [] for name in names}
        for index, (item, keep) in enumerate(zip(prepared, keeps, strict=True)):
            truth = item.example.truth.get("events")
            if truth is None:
                continue
            positions = np.cumsum(keep) - 1  # a kept row's position in the reduced sequence
            pairs = [event_targets(item.prompt, truth)]
            if "audio" in item.example.truth:
                pairs.append(flash_now_targets(item.prompt, truth))
            if timing:
                pairs += time_targets(item.prompt, truth)
            for rows, labels in pairs:
                seen = keep[rows]
                chosen = torch.as_tensor(positions[rows[seen]], device=device)
                for name, values in labels.items():
                    features[name].append(hidden[READ_LAYERS[name]][index, chosen])
                    targets[name].append(torch.as_tensor(values[seen], device=device))
        losses = []
        for name, classes in names.items():
            if not features[name]:
                continue
            weight = torch.ones(len(classes), device=device)
            if name in EVENT_CLASSES:
                weight[0] = NONE_WEIGHT
            losses.append(
                torch.nn.functional.cross_entropy(
                    self.logits(name, torch.cat(features[name])), torch.cat(targets[name]), weight=weight
                )
            )
        return torch.stack(losses).mean() if losses else torch.zeros((), device=device)
