"""ReductionLedger: every token-reduction stage of every media item of a run, and the tokens each stage dropped.

Stages, in the order the model applies them (docs/token_reduction.md §1):

    image   resize (pixels -> the processor's patch grid)  ->  pixel shuffle (4 patches -> 1 token)  -> reducer
    video   frame sampling  ->  tubelets (2 frames -> 1)  ->  pixel shuffle (4 -> 1)  ->  reducer
    audio   mel frames (10 ms)  ->  8x subsampling (80 ms per token)  ->  reducer
    LLM     "after LLM layer K": an in-LLM reducer's stage (FastV, PyramidDrop, SparseVLM), one row per stage layer

A reducer acting before the encoders (`Downsample`) has a "downsample" stage instead of "reducer": the original
item's tokens in, the smaller media's tokens out (the run's token map holds the smaller media's rows, with boxes,
frames and seconds in the original media).

The reducer stage's token-level decisions live in the run's token map (`kept`, `score`, `merged_into`, with the
pixel box, frames and seconds of every token); the ledger's `.tokens()` and `.pruned()` read them from there, and
`.summary()` counts them with `TokenMap.status()` (kept, merged, pruned), as every view does.

FLOPs (`omni_lab/flops.py`): `.flops()` is one row per stage (vision and audio towers, projectors, every LLM layer
at the length it saw, the head, an in-LLM reducer's own scoring, decoding one token) for the run and for its
unreduced prompt, and `.flops_summary()` the totals, the saving and the equivalent tokens (the unreduced length with
the same LLM prefill FLOPs). In-LLM drops are counted layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..modalities import MEDIA


@dataclass
class ReductionLedger:
    """`stages`: DataFrame with one row per (media item, stage): modality, item, stage, unit_in, count_in,
    unit_out, count_out, detail. `token_map`: the run's token map. `flops_table` / `flops_unreduced`: the run's and
    its unreduced prompt's `flops.FlopsTable` (None without the model's config). `config`: the model's config.
    `llm_stages`: an in-LLM reducer's decision per stage (`LLMStage`: keep, scores, merged_into by prompt position,
    seconds, scoring FLOPs; FastV's one `LLMDrop`), empty without one."""

    stages: object
    token_map: object
    flops_table: object = None
    flops_unreduced: object = None
    config: object = None
    llm_stages: tuple = ()

    def flops(self):
        """One row per stage: stage, kind, layer, tokens, flops, tokens_unreduced, flops_unreduced, saved.

        Stages: "vision", "vision projector", "audio", "audio projector", "llm.{layer}.{kind}" (every LLM layer at
        the length it saw), "llm.head", "llm.reducer" (an in-LLM reducer's scoring), "decode.{kind}" and
        "decode.head" (one generated token after the prefill).
        """
        if self.flops_table is None:
            raise ValueError("this ledger was built without the model's config: no FLOPs")
        reduced = self.flops_table.frame()
        unreduced = self.flops_unreduced.frame()[["stage", "tokens", "flops"]]
        unreduced = unreduced.rename(columns={"tokens": "tokens_unreduced", "flops": "flops_unreduced"})
        table = reduced.merge(unreduced, on="stage", how="outer", sort=False)
        table["kind"] = table["kind"].fillna("reducer")
        table["layer"] = table["layer"].fillna(-1).astype(int)
        for column in ("tokens", "tokens_unreduced"):
            table[column] = table[column].fillna(0).astype(int)
        for column in ("flops", "flops_unreduced"):
            table[column] = table[column].fillna(0.0)
        table["saved"] = table.flops_unreduced - table.flops
        return table

    def flops_summary(self) -> dict:
        """JSON-able FLOPs of the run against its unreduced prompt.

        Returns:
            {"prefill_flops" (encoders + projectors + LLM prefill + head + in-LLM scoring), "prefill_flops_unreduced",
            "saved_flops", "saved_share", "llm_prefill_flops", "llm_prefill_flops_unreduced", "decode_flops_per_token",
            "decode_flops_per_token_unreduced", "llm_tokens" (positions entering the LLM), "llm_tokens_unreduced",
            "equivalent_tokens" (the unreduced length with the run's LLM prefill FLOPs), "saved_equivalent_tokens",
            "stages" / "stages_unreduced" ({stage group: FLOPs})}; {} without the model's config.
        """
        from .. import flops

        if self.flops_table is None:
            return {}
        return flops.summary(self.config, self.flops_table, self.flops_unreduced)

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
        stages = self.stages
        for (modality, item), group in self.tokens().groupby(["modality", "item"], sort=False):
            mine = status[group.index.to_numpy()]
            kept = int((mine == "kept").sum())
            tokens = len(group)
            downsampled = stages[
                (stages.modality == modality) & (stages["item"] == item) & (stages.stage == "downsample")
            ]
            if len(downsampled):  # the tokens the smaller media never produced count as pruned
                tokens = int(downsampled.count_in.iloc[0])
            rows.append(
                {
                    "modality": modality,
                    "item": item,
                    "tokens": tokens,
                    "kept": kept,
                    "merged": int((mine == "merged").sum()),
                    "pruned": int((mine == "pruned").sum()) + tokens - len(group),
                    "kept_share": kept / max(1, tokens),
                }
            )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        summary = self.summary()
        if summary.empty:
            return "ReductionLedger(no media)"
        return f"ReductionLedger({int(summary.kept.sum())} of {int(summary.tokens.sum())} media tokens kept)"


def build_ledger(prompt, reducers: dict, token_map, processor, config=None, llm_stages=None) -> ReductionLedger:
    """Lay out every stage of every media item of `prompt` as run with `reducers`, against the run's token map.

    Args:
        prompt: the prompt as asked (before any reducer that rewrites media).
        reducers: {modality or "llm": reducer} that acted.
        token_map: the run's token map.
        processor: the model's processor.
        config: the model's config; with it the ledger carries FLOPs (`omni_lab/flops.py`).
        llm_stages: the in-LLM reducer's decision (`LLMDrop` or `LLMStage`s), for its scoring FLOPs.
    """
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
        if getattr(reducer, "before_encoders", False):
            from .downsample import prompt_items

            original = prompt_items(prompt)[(modality, item)]
            detail = f"{reducer!r}: {reducer.describe(original, prompt)}"
            stage(modality, item, "downsample", "tokens", original.num_tokens, "tokens", len(mine), detail)
            return
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
        layers = sorted({int(layer) for layer in media.dropped_at_layer if layer >= 0})
        layers = layers or ([in_llm.layer] if hasattr(in_llm, "layer") else [])
        for (modality, item), group in media.groupby(["modality", "item"], sort=False):
            dropped = group.dropped_at_layer.to_numpy()
            for layer in layers:
                present = (dropped < 0) | (dropped >= layer)
                stage(
                    modality,
                    item,
                    f"after LLM layer {layer}",
                    "tokens",
                    int(present.sum()),
                    "tokens",
                    int(((dropped < 0) | (dropped > layer)).sum()),
                    repr(in_llm),
                )
    ledger = ReductionLedger(pd.DataFrame(rows), token_map)
    if llm_stages is not None:
        ledger.llm_stages = tuple(llm_stages) if isinstance(llm_stages, (tuple, list)) else (llm_stages,)
    if config is not None:
        from .. import flops

        scoring = _scoring_flops(in_llm, llm_stages, config, token_map)
        ledger.config = config
        ledger.flops_table = flops.estimate(config, flops.geometry_of(token_map, prompt, config, True), scoring)
        unreduced = flops.geometry_of(prompt.token_map, prompt, config, False)
        ledger.flops_unreduced = flops.estimate(config, unreduced)
    return ledger


def _scoring_flops(in_llm, llm_stages, config, token_map) -> float:
    """Matrix-product FLOPs an in-LLM reducer spent scoring: its stages' own count, or its `scoring_flops`."""
    if in_llm is None or llm_stages is None:
        return 0.0
    stages = llm_stages if isinstance(llm_stages, (tuple, list)) else (llm_stages,)
    if all(hasattr(stage, "flops") for stage in stages):
        return float(sum(stage.flops for stage in stages))
    scoring = getattr(in_llm, "scoring_flops", None)
    if scoring is None:
        return 0.0
    prompt_rows = np.asarray(token_map["modality"]) != "generated"
    kept = prompt_rows & np.asarray(token_map["kept"])
    dropped_at = np.asarray(token_map["dropped_at_layer"])[kept]
    lengths = {
        stage.layer: int(kept.sum()) - int(((dropped_at >= 0) & (dropped_at < stage.layer)).sum()) for stage in stages
    }
    return float(scoring(config.text_config, lengths))
