"""FLOPs estimates (omni_lab/flops.py) against torch's FlopCounterMode, stage by stage, and equivalent tokens.

FlopCounterMode counts matrix products and convolutions. On CPU it reads zero for PyTorch's fused SDPA kernel and for
grouped-GEMM experts, so the counting runs switch the model to the eager attention and experts implementations (the
same products as matmuls) and back afterwards; element-wise work (norms, activations, softmax, the SSD's exp and
cumsums, the Mamba state update) is invisible to both.
"""

import copy
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import omni_lab as ol
from omni_lab import flops, forward
from omni_lab.media import VideoClip
from tests import synth

TOLERANCE = 0.05


@contextmanager
def countable(model):
    """Eager attention and experts, no parameter needing grad (the counter's module tracker), restored after."""
    implementations = model.config._attn_implementation, model.language_model.config._experts_implementation
    grads = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    model.set_attn_implementation("eager")
    model.set_experts_implementation("eager")
    model.requires_grad_(False)
    try:
        yield
    finally:
        model.set_attn_implementation(implementations[0])
        model.language_model.set_experts_implementation(implementations[1])
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(grads[name])


def counted(function):
    """(the counter's FLOPs per module name, the function's result)."""
    counter = FlopCounterMode(display=False, depth=None)
    with counter:
        result = function()
    return {name: sum(by_op.values()) for name, by_op in counter.get_flop_counts().items()}, result


def omni_prompt(lab):
    return lab.prompt(
        "What moves, and how many beeps?",
        images=[synth.image_array(64, 64), synth.image_array(96, 64, seed=1)],
        video=VideoClip(synth.moving_square_frames(5, 96, 64), fps=2.0),
        audio=(synth.tone(1.3), 16000),
    )


def close(measured: float, estimated: float, what: str) -> None:
    relative = abs(measured - estimated) / max(measured, 1.0)
    assert relative <= TOLERANCE, f"{what}: counter {measured:,.0f}, estimate {estimated:,.0f} ({relative:.1%} off)"


def check_every_stage(lab, prompt) -> dict:
    """Counter vs estimate for every stage of the unreduced prompt; returns {stage: relative error}."""
    model = lab.model
    table = flops.estimate(lab.config, flops.geometry_of(prompt.token_map, prompt, lab.config, reduced=False))
    frame = table.frame().set_index("stage")
    inputs = prompt.inputs
    errors = {}

    def record(stage, measured):
        estimated = float(frame.loc[stage, "flops"]) if stage in frame.index else float(stage_sum(frame, stage))
        close(measured, estimated, stage)
        errors[stage] = abs(measured - estimated) / max(measured, 1.0)

    with countable(model), torch.no_grad():
        vision, _ = counted(
            lambda: (
                model.get_image_features(inputs["pixel_values"], inputs["image_grid_hw"]),
                model.get_video_features(inputs["pixel_values_videos"]),
            )
        )
        record("vision", vision["RadioModel"])
        record("vision projector", vision["NemotronH_Omni_Reasoning_V3MultiModalProjector"])
        audio, _ = counted(lambda: model.get_audio_features(inputs["input_features"], inputs["input_features_mask"]))
        record("audio", audio["ParakeetEncoder"])
        record("audio projector", audio["NemotronH_Omni_Reasoning_V3MultiModalProjector"])
        embeds = forward.merge_embeddings(model, prompt, forward.encode_media(model, prompt))
        llm, output = counted(lambda: model.language_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1))
        for row in table.rows:
            if row.stage.startswith("llm.") and row.layer >= 0:
                record(row.stage, llm[f"NemotronHForCausalLM.model.layers.{row.layer}"])
        record("llm.head", llm["NemotronHForCausalLM.lm_head"])
        step, _ = counted(
            lambda: model.language_model(
                input_ids=torch.tensor([[5]]), cache=output.cache, use_cache=True, logits_to_keep=1
            )
        )
        record("decode", step["NemotronHForCausalLM"])
    return errors


def stage_sum(frame, prefix: str) -> float:
    return float(frame[frame.index.str.startswith(prefix)].flops.sum())


@pytest.mark.parametrize("source", ["twin", "small"])
def test_every_stage_matches_the_flop_counter(source, twin_lab, small_lab):
    lab = twin_lab if source == "twin" else small_lab
    prompt = omni_prompt(lab) if source == "small" else twin_omni_prompt(lab)
    errors = check_every_stage(lab, prompt)
    kinds = {stage.split(".")[-1] for stage in errors if stage.startswith("llm.") and stage != "llm.head"}
    assert kinds == {"mamba", "moe", "attention"}  # every layer kind was checked
    assert max(errors.values()) <= TOLERANCE


def twin_omni_prompt(lab):
    from omni_lab.toy import shapesworld

    example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 0), family="omni")
    return lab.prompt(example.question, images=[synth.image_array(128, 128)], video=example.video, audio=example.audio)


def test_in_llm_drops_are_counted_layer_by_layer(small_lab):
    prompt = small_lab.prompt(
        "What moves?",
        images=[synth.image_array(64, 64)],
        video=VideoClip(synth.moving_square_frames(6, 96, 64), fps=2.0),
    )
    model = small_lab.model
    text = small_lab.config.text_config
    reducer = ol.reducers.PyramidDrop(0.6)
    with countable(model):
        # the drop needs SDPA (eager attention's explicit L x L mask cannot shrink mid-forward), which the counter
        # cannot see on CPU: attention layers are compared without their 4·H·L²·d_h term
        model.set_attn_implementation("sdpa")
        counts, run = counted(lambda: small_lab.run(prompt, max_new_tokens=1, reducer=reducer))
    table = run.ledger.flops()
    layers = table[table.layer >= 0].set_index("layer")
    drops = sorted({int(layer) for layer in run.token_map["dropped_at_layer"] if layer >= 0})
    assert drops == [3, 8]
    # layers up to the first stage see the whole prompt; then the shorter sequence, stage by stage
    assert layers.loc[0, "tokens"] == layers.loc[3, "tokens"] == len(prompt)
    assert layers.loc[4, "tokens"] < layers.loc[3, "tokens"] and layers.loc[9, "tokens"] < layers.loc[8, "tokens"]
    unseen = 0.0
    for layer, row in layers.iterrows():
        if row.kind == "attention":
            unseen += 4 * text.num_attention_heads * row.tokens**2 * text.head_dim
        else:  # the stage layers (attention) also hold the reducer's own scoring: checked in the total below
            close(counts[f"NemotronHForCausalLM.model.layers.{layer}"], row.flops, f"layer {layer}")
    measured = sum(counts[f"NemotronHForCausalLM.model.layers.{layer}"] for layer in layers.index)
    estimated = float(layers.flops.sum()) - unseen + float(table[table.stage == "llm.reducer"].flops.sum())
    close(measured, estimated, "LLM prefill with PyramidDrop")
    summary = run.ledger.flops_summary()
    assert summary["llm_tokens"] == summary["llm_tokens_unreduced"] == len(prompt)
    # equivalent tokens: between the kept length and the full one, and exactly what the unreduced prefill costs
    last = int(layers.tokens.iloc[-1])
    assert last < summary["equivalent_tokens"] < len(prompt)
    equivalent = summary["equivalent_tokens"]
    low = flops.llm_prefill_flops(text, int(equivalent))
    high = flops.llm_prefill_flops(text, int(equivalent) + 1)
    assert low <= summary["llm_prefill_flops"] <= high


def test_a_reduction_before_the_llm_is_its_own_equivalent_length(toy_lab):
    prompt = toy_lab.prompt("What moves?", video=VideoClip(synth.moving_square_frames(8, 96, 64), fps=2.0))
    run = toy_lab.run(prompt, max_new_tokens=2, reducer=ol.reducers.EVS(0.5))
    summary = run.to_dict()["flops"]
    kept = int(run.token_map.df.query("modality != 'generated'").kept.sum())
    assert summary["llm_tokens"] == kept and summary["equivalent_tokens"] == pytest.approx(kept, abs=1e-6)
    assert summary["saved_flops"] > 0 and summary["stages"]["vision"] == summary["stages_unreduced"]["vision"]
    table = run.ledger.flops()
    # decoding saves only the attention layers' shorter KV; everything else per token is unchanged
    decode = table[table.stage.str.startswith("decode.")].set_index("stage")
    assert decode.loc["decode.attention", "saved"] > 0
    assert (decode.drop(index="decode.attention").saved == 0).all()


def test_downsampling_saves_encoder_flops_too(toy_lab):
    prompt = toy_lab.prompt("What moves?", video=VideoClip(synth.moving_square_frames(8, 96, 64), fps=2.0))
    run = toy_lab.run(prompt, max_new_tokens=1, reducer=ol.reducers.Downsample(0.5))
    stages = run.to_dict()["flops"]["stages"]
    unreduced = run.to_dict()["flops"]["stages_unreduced"]
    assert stages["vision"] == pytest.approx(unreduced["vision"] / 2)  # 4 of 8 tubelets' frames encoded


def test_full_architecture_256_frames_with_and_without_evs(full_meta_lab, capsys):
    """The released architecture, one 256-frame video (128 tubelets of 32 x 32 patches), text as the release's
    template lays out 128 frame labels; EVS 0.7 keeps max(256, int(32768 x 0.3)) = 9830 video tokens."""
    lab = full_meta_lab
    text_tokens = frame_label_tokens(lab, frames=256)
    video = (128, 32, 32)
    full_length = 32768 + text_tokens
    kept_length = 9830 + text_tokens
    layers = len(lab.layer_pattern)
    geometry = flops.Geometry(videos=(video,), llm_lengths=(full_length,) * layers)
    reduced = flops.Geometry(videos=(video,), llm_lengths=(kept_length,) * layers)
    summary = flops.summary(lab.config, flops.estimate(lab.config, reduced), flops.estimate(lab.config, geometry))
    with capsys.disabled():
        print(f"\nrandom:full, 256 frames ({full_length} LLM tokens; {kept_length} with EVS 0.7)")
        for key in ("vision", "vision projector", "llm mamba", "llm attention", "llm moe", "llm head"):
            print(
                f"  {key:17s} {summary['stages_unreduced'][key] / 1e12:10.2f} TFLOPs -> {summary['stages'][key] / 1e12:8.2f}"
            )
        print(
            f"  prefill total     {summary['prefill_flops_unreduced'] / 1e12:10.2f} TFLOPs -> "
            f"{summary['prefill_flops'] / 1e12:8.2f} (saved {summary['saved_share']:.0%}); decode "
            f"{summary['decode_flops_per_token_unreduced'] / 1e9:.2f} -> {summary['decode_flops_per_token'] / 1e9:.2f} "
            f"GFLOPs/token"
        )
    assert summary["stages"]["vision"] == summary["stages_unreduced"]["vision"]  # EVS runs after the encoder
    assert summary["equivalent_tokens"] == pytest.approx(kept_length)
    # about 3.6 GFLOPs per token of linear work at 3.2 B active parameters (2 x 1.84 B MoE + 0.89 B Mamba + 0.14 B
    # attention + the head for one position), plus attention's and the scan's length terms
    per_token = (summary["stages_unreduced"]["llm moe"] + summary["stages_unreduced"]["llm mamba"]) / full_length
    assert 2 * (1.84e9 + 0.89e9) < per_token < 2 * (1.84e9 + 0.89e9) * 1.25


def frame_label_tokens(lab, frames: int) -> int:
    """Text tokens of a prompt with a `frames`-frame video: built with a copy of the processor whose frames are 2 x 2
    patches (the labels and chat template are the same; the pixels stay tiny)."""
    from omni_lab.prompt import build_prompt

    processor = copy.copy(lab.processor)
    processor.video_processor = copy.copy(lab.processor.video_processor)
    processor.video_processor.video_target_num_patches = 4
    clip = VideoClip(np.zeros((frames, 32, 32, 3), np.uint8), fps=1.0)
    prompt = build_prompt(processor, lab.context_length, "Describe the video.", video=clip, max_frames=frames)
    return prompt.token_map.counts()["text"]
