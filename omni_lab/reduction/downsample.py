"""Downsample: the same media at a lower resolution (images) or with fewer frames (video), the equal-budget control
that needs no reducer at all.

VTC-Bench (and UniPruneBench's random baseline before it) found that simply showing the model less (a smaller image,
fewer frames) beats many token-pruning methods at the same token budget, so a study of reducers pairs each one with
a downsampled prompt keeping (at most) the reducer's budget (`Downsample.matching(reducer)`; `ol.studies.sweep(...,
controls=("random", "downsample"))`).

It acts before the encoders (hook point H0), so it changes the prompt: `rewrite(prompt, ...)` rebuilds it with the
model's own processor from the smaller media, and the pipeline runs the encoders on that (`forward.rewrite_media`;
the encoders' FLOPs shrink too, unlike any reducer after them). The run's token map is the rewritten prompt's, and it
still says where every token came from in the *original* media:

- an image is resized to the patch grid that keeps its budget, (2h x 16, 2w x 16) pixels for h x w tokens, and
  carries the original size the way a pre-shrunk image does (`media.images.ORIGINAL_SIZE`), so every token's pixel
  box is in the original image's pixels; the processor's lower patch bound is lowered for the call so it does not
  scale the image back up;
- a video keeps 2T' of its frames, evenly spaced over the clip, for T' = its budget in tubelets: every frame keeps its
  source index and time, so the token map's `frames` and seconds are the original ones (the video processor resizes
  every frame to its fixed patch budget, so a lower resolution would not change the token count: video is
  downsampled in time).

`Downsample(rate)` keeps at most max(1, floor(N (1 - rate))) tokens of each image and video: for an image of h x w
tokens the largest h' x w' <= the budget (h' <= h, w' <= w; ties to the aspect ratio nearest the original's), for a
video of T tubelets of h x w the whole tubelets T' = max(1, budget // (h w)) (a video keeps at least one tubelet,
which can exceed a budget below h x w tokens). `budget(item)` is that count, exactly
what the rewritten prompt holds (grids are whole, so it can be below a pruning reducer's count; the sweep reports
the tokens each arm kept). Audio is left alone (Parakeet's 12.5 tokens/s is fixed; fewer tokens would mean
time-stretched sound).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch

from ..errors import OmniLabInputError
from .base import Reduction, ReductionItem, check_modality, check_rate, rate_budget


def image_grid_for(rows: int, cols: int, budget: int) -> tuple[int, int]:
    """The largest (rows', cols') <= (rows, cols) with rows' x cols' <= budget; ties to the nearest aspect ratio."""
    budget = max(1, min(budget, rows * cols))
    aspect = math.log(rows / cols)
    best = None
    for new_rows in range(1, rows + 1):
        new_cols = min(cols, budget // new_rows)
        if new_cols < 1:
            continue
        key = (new_rows * new_cols, -abs(math.log(new_rows / new_cols) - aspect), new_rows)
        if best is None or key > best[0]:
            best = (key, (new_rows, new_cols))
    return best[1]


def frames_for(frame_count: int, tubelets: int, frames_per_tubelet: int = 2) -> np.ndarray:
    """Indices of the frames kept for `tubelets` tubelets: all when they fit, else `frames_per_tubelet x tubelets`
    frames evenly spaced over the clip (first and last included)."""
    wanted = frames_per_tubelet * tubelets
    if wanted >= frame_count:
        return np.arange(frame_count)
    return np.round(np.linspace(0, frame_count - 1, wanted)).astype(int)


class Downsample:
    """Show the model smaller images and fewer video frames, keeping at most a budget of tokens.

    Args:
        rate: fraction of each image's and video's tokens to drop, in [0, 1).
        match: keep at most `match.budget(item)` tokens per item instead (see `Downsample.matching`).

    Exactly one of `rate` and `match` is given.
    """

    modalities = ("image", "video")
    before_encoders = True

    def __init__(self, rate: float | None = None, match=None):
        if (rate is None) == (match is None):
            raise OmniLabInputError("Downsample takes exactly one of rate or match (Downsample.matching)")
        if match is not None:
            if not callable(getattr(match, "budget", None)) or not hasattr(match, "modalities"):
                raise OmniLabInputError(f"Downsample.matching needs a reducer with budget(item), got {match!r}")
            self.modalities = tuple(m for m in match.modalities if m in ("image", "video"))
            if not self.modalities:
                raise OmniLabInputError(f"Downsample cannot match {match!r}: it acts on no image or video")
        self.rate = None if rate is None else check_rate("Downsample", rate)
        self.match = match

    @classmethod
    def matching(cls, other) -> Downsample:
        """A Downsample keeping at most `other.budget(item)` tokens of every image and video `other` acts on."""
        return cls(match=other)

    def __repr__(self) -> str:
        if self.match is not None:
            return f"Downsample.matching({self.match!r})"
        return f"Downsample(rate={self.rate})"

    # ------------------------------------------------------------------------------------------------- budgets
    def target(self, item: ReductionItem) -> int:
        """The most tokens the item may keep: the rate's budget or the matched reducer's."""
        if self.match is not None:
            return int(self.match.budget(item))
        return rate_budget(item.num_tokens, self.rate)

    def budget(self, item: ReductionItem) -> int:
        """Tokens the downsampled item has: whole grids, at most `target(item)`."""
        check_modality(self, item)
        target = self.target(item)
        tubelets, rows, cols = item.grid
        if item.modality == "image":
            new_rows, new_cols = image_grid_for(rows, cols, target)
            return new_rows * new_cols
        return min(tubelets, max(1, target // (rows * cols))) * rows * cols

    def __call__(self, item: ReductionItem) -> Reduction:
        """The item is already downsampled when a reducer stage sees it: keep every token."""
        return Reduction(keep=torch.ones(item.num_tokens, dtype=torch.bool))

    # ------------------------------------------------------------------------------------------------- rewrite
    def rewrite(self, prompt, modalities, processor, context_length: int):
        """The prompt with its images and videos of `modalities` downsampled, built again by the model's processor.

        Args:
            prompt: the original `Prompt`.
            modalities: the modalities this reducer was given (a subset of image, video).
            processor: the model's processor; context_length: the LLM's context.
        Returns:
            a new `Prompt` whose token map's boxes, frames and seconds refer to the original media.
        """
        from ..conversation import media_order, render
        from ..media import images as image_module
        from ..prompt import _lay_out, build_prompt

        items = prompt_items(prompt)
        images = list(prompt.images)
        videos = list(prompt.videos)
        smallest = None
        if "image" in modalities:
            patch = processor.image_processor.patch_size
            merge = round(1 / processor.image_processor.downsample_ratio)
            for index, image in enumerate(prompt.images):
                item = items[("image", index)]
                rows, cols = image_grid_for(*item.grid[1:], self.target(item))
                small = image.resize((cols * merge * patch, rows * merge * patch), resample=3)  # 3: BICUBIC
                small.info[image_module.ORIGINAL_SIZE] = image_module.original_size(image)
                images[index] = small
                smallest = rows * cols * merge**2 if smallest is None else min(smallest, rows * cols * merge**2)
        if "video" in modalities:
            for index, clip in enumerate(prompt.videos):
                item = items[("video", index)]
                kept = frames_for(clip.num_frames, self.budget(item) // (item.grid[1] * item.grid[2]))
                videos[index] = dataclasses.replace(
                    clip,
                    frames=clip.frames[kept],
                    frame_indices=[clip.frame_indices[i] for i in kept],
                    times=None if clip.times is None else [clip.times[i] for i in kept],
                )
        call_processor = processor
        if smallest is not None and smallest < processor.image_processor.min_num_patches:
            call_processor = copy.copy(processor)
            call_processor.image_processor = copy.copy(processor.image_processor)
            call_processor.image_processor.min_num_patches = smallest
        if prompt.turns:  # a conversation (lab.chat): every turn again, with its media downsampled
            rewritten = render(
                call_processor,
                context_length,
                prompt.turns,
                images,
                videos,
                list(prompt.audios),
                thinking=prompt.thinking,
                reference=prompt.reference,
            )
        else:
            rewritten = build_prompt(
                call_processor,
                context_length,
                prompt.text,
                images=images or None,
                video=videos or None,
                audio=list(prompt.audios) or None,
                system=prompt.system,
                thinking=prompt.thinking,
                reference=prompt.reference,
            )
        for loaded, original in zip(rewritten.images, prompt.images, strict=True):
            loaded.info[image_module.ORIGINAL_SIZE] = image_module.original_size(original)
        token_map = _lay_out(
            processor,
            rewritten.inputs,
            rewritten.images,
            rewritten.videos,
            rewritten.audios,
            order=media_order(rewritten.turns),
            turns=rewritten.token_map["turn"],
        )
        return dataclasses.replace(rewritten, token_map=token_map)

    def describe(self, item: ReductionItem, prompt) -> str:
        """A ledger line: what the item became."""
        tubelets, rows, cols = item.grid
        if item.modality == "image":
            new_rows, new_cols = image_grid_for(rows, cols, self.target(item))
            return f"{rows}x{cols} -> {new_rows}x{new_cols} tokens (smaller image)"
        kept = self.budget(item) // (rows * cols)
        clip = prompt.videos[item.index]
        return f"{clip.num_frames} -> {len(frames_for(clip.num_frames, kept))} frames ({tubelets} -> {kept} tubelets)"


def prompt_items(prompt) -> dict:
    """{(modality, index): ReductionItem} of a prompt's images and videos with their grids (no embeddings: what a
    budget needs). Embeddings are zero-width placeholders of the right length."""
    out = {}
    token_map = prompt.token_map
    for modality, media in (("image", prompt.images), ("video", prompt.videos)):
        for index, medium in enumerate(media):
            rows = np.flatnonzero(token_map.rows(modality=modality, item=index))
            grid_rows = int(token_map["row"][rows].max()) + 1
            grid_cols = int(token_map["col"][rows].max()) + 1
            grid = (len(rows) // (grid_rows * grid_cols), grid_rows, grid_cols)
            out[(modality, index)] = ReductionItem(
                modality, index, torch.empty(len(rows), 0), grid, medium, token_map.df.iloc[rows]
            )
    return out
