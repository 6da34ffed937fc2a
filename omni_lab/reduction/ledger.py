"""ReductionLedger: every token-reduction stage of every media item of a run, and the tokens each stage dropped.

Stages, in the order the model applies them (docs/token_reduction.md §1):

    image   resize (pixels -> the processor's patch grid)  ->  pixel shuffle (4 patches -> 1 token)  -> reducer
    video   frame sampling  ->  tubelets (2 frames -> 1)  ->  pixel shuffle (4 -> 1)  ->  reducer
    audio   mel frames (10 ms)  ->  8x subsampling (80 ms per token)  ->  reducer

The reducer stage's token-level decisions live in the run's token map (`kept`, `score`, `merged_into`, with the
pixel box, frames and seconds of every token); the ledger's `.tokens()` and `.pruned()` read them from there, and
`.summary()` counts them with `TokenMap.status()` (kept, merged, pruned), as every view does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..modalities import MEDIA


@dataclass
class ReductionLedger:
    """`stages`: DataFrame with one row per (media item, stage): modality, item, stage, unit_in, count_in,
    unit_out, count_out, detail. `token_map`: the run's token map."""

    stages: object
    token_map: object

    def tokens(self, modality: str | None = None, item: int | None = None):
        """Token-map rows of media tokens (pruned ones included) with kept / score / merged_into and provenance."""
        df = self.token_map.df
        mask = df.modality.isin(MEDIA) if modality is None else df.modality == modality
        if item is not None:
            mask &= df["item"] == item
        return df[mask]

    def pruned(self, modality: str | None = None, item: int | None = None):
        """The media tokens the reducers dropped (merged ones included), with where they came from."""
        rows = self.tokens(modality, item)
        return rows[~rows.kept]

    def summary(self):
        """One row per media item: tokens before the reducer, kept, merged, pruned, kept share."""
        import pandas as pd

        rows = []
        status = self.token_map.status()
        for (modality, item), group in self.tokens().groupby(["modality", "item"], sort=False):
            mine = status[group.index.to_numpy()]
            kept = int((mine == "kept").sum())
            rows.append(
                {
                    "modality": modality,
                    "item": item,
                    "tokens": len(group),
                    "kept": kept,
                    "merged": int((mine == "merged").sum()),
                    "pruned": int((mine == "pruned").sum()),
                    "kept_share": kept / max(1, len(group)),
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        summary = self.summary()
        if summary.empty:
            return "ReductionLedger(no media)"
        return f"ReductionLedger({int(summary.kept.sum())} of {int(summary.tokens.sum())} media tokens kept)"


def build_ledger(prompt, reducers: dict, token_map, processor) -> ReductionLedger:
    """Lay out every stage of every media item of `prompt` as run with `reducers`, against the run's token map."""
    import pandas as pd

    rows = []
    df = token_map.df
    inputs = prompt.inputs
    patch = processor.image_processor.patch_size
    merge = round(1 / processor.image_processor.downsample_ratio) ** 2

    def stage(modality, item, name, unit_in, count_in, unit_out, count_out, detail=""):
        rows.append(
            {
                "modality": modality,
                "item": item,
                "stage": name,
                "unit_in": unit_in,
                "count_in": count_in,
                "unit_out": unit_out,
                "count_out": count_out,
                "detail": detail,
            }
        )

    def reducer_stage(modality, item):
        mine = df[(df.modality == modality) & (df["item"] == item)]
        reducer = reducers.get(modality)
        stage(
            modality,
            item,
            "reducer",
            "tokens",
            len(mine),
            "tokens",
            int(mine.kept.sum()),
            repr(reducer) if reducer is not None else "none",
        )

    grids = inputs["image_grid_hw"].tolist() if "image_grid_hw" in inputs else []
    for item, (image, (grid_h, grid_w)) in enumerate(zip(prompt.images, grids, strict=True)):
        width, height = image.size
        stage(
            "image",
            item,
            "resize",
            "pixels",
            width * height,
            "patches",
            grid_h * grid_w,
            f"{width}x{height} -> {grid_w * patch}x{grid_h * patch} px, {patch}x{patch} patches",
        )
        stage(
            "image", item, "pixel shuffle", "patches", grid_h * grid_w, "tokens", grid_h * grid_w // merge, "2x2 -> 1"
        )
        reducer_stage("image", item)
    if prompt.videos:
        videos = inputs["pixel_values_videos"]  # (videos, tubelets, 2C, H, W)
        tubelets = int(videos.shape[1])
        patches = (videos.shape[-2] // patch) * (videos.shape[-1] // patch)
        for item, clip in enumerate(prompt.videos):
            stage(
                "video",
                item,
                "frame sampling",
                "source frames",
                max(clip.frame_indices) + 1,
                "frames",
                clip.num_frames,
                f"fps {clip.fps}" if clip.fps else "frames given",
            )
            stage(
                "video",
                item,
                "tubelets",
                "frames",
                clip.num_frames,
                "tubelets",
                tubelets,
                f"{processor.video_temporal_patch_dim} frames -> 1"
                + (" (last frame repeated)" if clip.num_frames % 2 else ""),
            )
            stage(
                "video",
                item,
                "pixel shuffle",
                "patches",
                tubelets * patches,
                "tokens",
                tubelets * patches // merge,
                "2x2 -> 1",
            )
            reducer_stage("video", item)
    for item, clip in enumerate(prompt.audios):
        frames = 1 + len(clip.waveform) // 160
        tokens = int(((df.modality == "audio") & (df["item"] == item)).sum())
        stage("audio", item, "mel frames", "samples", len(clip.waveform), "mel frames", frames, "16 kHz, 10 ms hop")
        stage("audio", item, "subsampling", "mel frames", frames, "tokens", tokens, "8x (3 stride-2 convs)")
        reducer_stage("audio", item)
    in_llm = reducers.get("llm")
    if in_llm is not None:
        media = df[df.kept & df.modality.isin(in_llm.modalities)]
        for (modality, item), group in media.groupby(["modality", "item"], sort=False):
            stage(
                modality,
                item,
                f"after LLM layer {in_llm.layer}",
                "tokens",
                len(group),
                "tokens",
                int((group.dropped_at_layer < 0).sum()),
                repr(in_llm),
            )
    return ReductionLedger(pd.DataFrame(rows), token_map)
