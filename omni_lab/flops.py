"""FLOPs of one run, stage by stage: encoders, projectors, every LLM layer at its real sequence length, decoding.

An estimate from the model's config and the run's token geometry (no forward pass): 2 x multiply-adds of every
matrix product and convolution the model's torch path computes, the quantity papers call FLOPs and the quantity
`torch.utils.flop_counter.FlopCounterMode` counts (tests/test_flops.py checks every stage against it on the toy twin
and `random:small` within 5 %; they agree to the FLOP).

    vision tower   per image / tubelet of n patches: patch embedding (Linear 3·16² -> d, 2·16²·3 -> d for video),
                   then per block and per token the q, k, v, o and MLP linears, plus attention's 4·H·S²·d_h over the
                   item's own sequence S = n + CLS/register tokens (each image and tubelet attends to itself only)
    projectors     RMSNorm -> Linear -> ReLU² -> Linear per merged token (vision: 4·d_vit -> d_llm; audio likewise)
    audio tower    Parakeet on the padded batch of clips: the 2-D subsampling convolutions, then per conformer
                   layer two FFNs, q/k/v/o, the relative-position projection over 2L-1 positions and its L x (2L-1)
                   product, attention's 4·H·L²·d_h, the pointwise / depthwise convolution module
    LLM, per layer at the length L_l it really sees (in-LLM drops counted layer by layer, not averaged):
      Mamba-2      in_proj, causal depthwise conv (L + k - 1 outputs), out_proj, and the chunked SSD scan as
                   transformers computes it with chunk Q, c = ceil(L / Q) chunks, H heads of P x N:
                   2·c·Q²·H·(N + P) (intra-chunk) + 4·c·Q·H·P·N (chunk states, state -> output) + 2·(c+1)²·H·P·N
                   (the inter-chunk recurrence): linear in L at a fixed chunk size
      attention    q/k/v/o projections + 4·H·L²·d_h (QKᵀ and PV, dense as the torch path computes them; a causal
                   flash kernel skips about half of the L² term)
      MoE          router (2·d·E) + the k active routed experts (4·d·I each) + the shared expert (4·d·I_s), per token
      head         lm_head on the last position only (the prefill keeps one position's logits)
    decode         one generated token at the prompt's length: per layer the same linears for one position, the
                   Mamba conv window and state readout (2·H·P·N), attention over each attention layer's own KV
                   length (shorter after an in-LLM drop), the head

What the counter cannot see, and so neither does this estimate: element-wise work (norms, activations, softmax, the
SSD's exp / cumsum / segment sums, the Mamba state update dA·h + dB·x, router sigmoid and top-k, residual adds),
embedding lookups, pixel shuffle and position-embedding interpolation (reshapes and `interpolate`). On CPU the
counter also reads zero for PyTorch's fused SDPA kernel (`_scaled_dot_product_flash_attention_for_cpu`) and for
grouped-GEMM experts (`_grouped_mm`): the test runs the eager attention and experts implementations, which compute
the same products as matmuls.

Equivalent tokens: the unreduced LLM length whose prefill (all layers + head) costs what the reduced run's prefill
cost; for a reduction before the LLM it is the reduced length itself, for an in-LLM drop it lies between the
lengths before and after the drop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .presets import layers as layer_registry


@dataclass(frozen=True)
class Geometry:
    """What one run's encoders and LLM process.

    Attributes:
        image_grids: per image its patch grid `(rows, cols)` (16-px patches, before pixel shuffle).
        videos: per video `(tubelets, patch rows, patch cols)`.
        audio: `(clips, mel frames of the padded batch)`, or None without audio (Parakeet runs on the padded batch).
        llm_lengths: per LLM layer the number of positions it sees at the prefill.
        audio_tokens: audio tokens entering the projector (the clips' real lengths).
    """

    image_grids: tuple = ()
    videos: tuple = ()
    audio: tuple | None = None
    llm_lengths: tuple = ()
    audio_tokens: int = 0

    @property
    def vision_tokens(self) -> int:
        """Merged tokens entering the vision projector (4 patches -> 1)."""
        return sum(rows * cols // 4 for rows, cols in self.image_grids) + sum(
            tubelets * rows * cols // 4 for tubelets, rows, cols in self.videos
        )


@dataclass
class Stage:
    """One row of a FLOPs table: `stage` name, `kind`, `layer` (-1 outside the LLM), `tokens` it processes, `flops`."""

    stage: str
    kind: str
    layer: int
    tokens: int
    flops: float


# ------------------------------------------------------------------------------------------------- encoders
def vision_tower_flops(vision_config, sequences: list[tuple[int, int, bool]]) -> float:
    """The RADIO tower over `sequences`: (count, patches per item, is_video) -> FLOPs.

    Each item is one image or one tubelet, attending to its own patches plus the CLS and register tokens.
    """
    hidden = vision_config.hidden_size
    heads = vision_config.num_attention_heads
    head_dim = getattr(vision_config, "head_dim", None) or hidden // heads
    prefix = vision_config.num_summary_tokens
    if getattr(vision_config, "use_swiglu_ffn", False):
        inner = (int(int(hidden * vision_config.mlp_ratio) * 2 / 3) + 7) // 8 * 8
        mlp = 2 * 3 * hidden * inner
    else:
        mlp = 2 * 2 * hidden * int(hidden * vision_config.mlp_ratio)
    per_token = 2 * (3 * heads * head_dim * hidden + heads * head_dim * hidden) + mlp
    patch_dim = vision_config.patch_dim or vision_config.num_channels * vision_config.patch_size**2
    video_patch_dim = vision_config.video_patch_dim or patch_dim * (vision_config.video_temporal_patch_size or 1)
    total = 0.0
    for count, patches, is_video in sequences:
        length = patches + prefix
        embed = 2 * patches * (video_patch_dim if is_video else patch_dim) * hidden
        blocks = vision_config.num_hidden_layers * (per_token * length + 4 * heads * length**2 * head_dim)
        total += count * (embed + blocks)
    return float(total)


def projector_flops(input_size: int, hidden_size: int, output_size: int, tokens: int) -> float:
    """RMSNorm -> Linear(input, hidden) -> ReLU² -> Linear(hidden, output) on `tokens` tokens."""
    return float(2 * tokens * (input_size * hidden_size + hidden_size * output_size))


def _conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


def audio_tower_flops(audio_config, clips: int, frames: int) -> tuple[float, int]:
    """Parakeet on `clips` clips padded to `frames` mel frames: (FLOPs, encoder length per clip)."""
    kernel, stride = audio_config.subsampling_conv_kernel_size, audio_config.subsampling_conv_stride
    padding, channels = (kernel - 1) // 2, audio_config.subsampling_conv_channels
    stages = int(math.log2(audio_config.subsampling_factor))
    time, freq = frames, audio_config.num_mel_bins
    total = 0.0
    for index in range(stages):
        time, freq = _conv_length(time, kernel, stride, padding), _conv_length(freq, kernel, stride, padding)
        if index == 0:
            total += 2 * channels * kernel * kernel * time * freq  # Conv2d(1 -> C)
        else:
            total += 2 * channels * kernel * kernel * time * freq  # depthwise Conv2d(C -> C, groups=C)
            total += 2 * channels * channels * time * freq  # pointwise 1x1
    hidden = audio_config.hidden_size
    length = time
    total += 2 * length * channels * (audio_config.num_mel_bins // stride**stages) * hidden  # subsampling linear
    heads = audio_config.num_attention_heads
    head_dim = hidden // heads
    feed_forward = 2 * 2 * 2 * hidden * audio_config.intermediate_size * length  # two FFNs
    projections = 4 * 2 * hidden * heads * head_dim * length + 2 * hidden * heads * head_dim * (2 * length - 1)
    attention = 2 * heads * length * (2 * length - 1) * head_dim + 4 * heads * length**2 * head_dim
    conv_kernel = audio_config.conv_kernel_size
    convolution = 2 * hidden * 2 * hidden * length + 2 * hidden * conv_kernel * length + 2 * hidden * hidden * length
    total += audio_config.num_hidden_layers * (feed_forward + projections + attention + convolution)
    return float(clips * total), length


# ------------------------------------------------------------------------------------------------------ LLM
def llm_layer_flops(text_config, kind: str, length: int) -> float:
    """One LLM layer's prefill FLOPs on `length` positions (`kind`: mamba, attention, moe, mlp)."""
    hidden = text_config.hidden_size
    if length <= 0:
        return 0.0
    if kind == "mamba":
        heads, head_dim = text_config.mamba_num_heads, text_config.mamba_head_dim
        state, groups = text_config.ssm_state_size, text_config.n_groups
        inner = heads * head_dim
        conv_dim = inner + 2 * groups * state
        kernel, chunk = text_config.conv_kernel, text_config.chunk_size
        chunks = -(-length // chunk)
        projections = 2 * length * hidden * (inner + conv_dim + heads) + 2 * length * inner * hidden
        conv = 2 * conv_dim * kernel * (length + kernel - 1)
        scan = (
            2 * chunks * chunk**2 * heads * (state + head_dim)
            + 4 * chunks * chunk * heads * head_dim * state
            + 2 * (chunks + 1) ** 2 * heads * head_dim * state
        )
        return float(projections + conv + scan)
    if kind == "attention":
        heads, kv_heads, head_dim = (
            text_config.num_attention_heads,
            text_config.num_key_value_heads,
            text_config.head_dim,
        )
        projections = 2 * length * hidden * (2 * heads * head_dim + 2 * kv_heads * head_dim)
        return float(projections + 4 * heads * length**2 * head_dim)
    if kind == "moe":
        latent = text_config.moe_latent_size or hidden
        router = 2 * length * hidden * text_config.n_routed_experts
        routed = 4 * length * text_config.num_experts_per_tok * latent * text_config.moe_intermediate_size
        shared = 4 * length * hidden * text_config.moe_shared_expert_intermediate_size
        latent_projections = 4 * length * hidden * latent if text_config.moe_latent_size else 0
        return float(router + routed + shared + latent_projections)
    if kind == "mlp":
        return float(4 * length * hidden * text_config.intermediate_size)
    raise ValueError(f"unknown layer kind {kind!r}")


def decode_layer_flops(text_config, kind: str, context: int) -> float:
    """One LLM layer's FLOPs for one generated token; `context`: the attention layer's KV length (itself included)."""
    if kind == "mamba":
        heads, head_dim = text_config.mamba_num_heads, text_config.mamba_head_dim
        state, groups = text_config.ssm_state_size, text_config.n_groups
        inner, hidden = heads * head_dim, text_config.hidden_size
        conv_dim = inner + 2 * groups * state
        kernel = text_config.conv_kernel
        # transformers' cached conv keeps `kernel` past inputs and convolves them with the new one: 2 outputs
        conv = 2 * conv_dim * kernel * 2
        return float(2 * hidden * (inner + conv_dim + heads) + 2 * inner * hidden + conv + 2 * heads * head_dim * state)
    if kind == "attention":
        hidden, heads = text_config.hidden_size, text_config.num_attention_heads
        kv_heads, head_dim = text_config.num_key_value_heads, text_config.head_dim
        projections = 2 * hidden * (2 * heads * head_dim + 2 * kv_heads * head_dim)
        return float(projections + 4 * heads * context * head_dim)
    return llm_layer_flops(text_config, kind, 1)


def head_flops(text_config, positions: int = 1) -> float:
    """The LM head on `positions` positions."""
    return float(2 * positions * text_config.hidden_size * text_config.vocab_size)


# ---------------------------------------------------------------------------------------------- estimates
@dataclass
class FlopsTable:
    """A run's FLOPs per stage (`rows`, `Stage`s) and the LLM-only cost function behind its equivalent tokens."""

    rows: list = field(default_factory=list)
    text_config: object = None

    def frame(self):
        """DataFrame: stage, kind, layer, tokens, flops."""
        import pandas as pd

        return pd.DataFrame([vars(row) for row in self.rows], columns=["stage", "kind", "layer", "tokens", "flops"])

    def total(self, kinds=None, prefix: str | None = None) -> float:
        """Sum of `flops` over rows of `kinds` (all prefill rows when None) or whose stage starts with `prefix`."""
        rows = [row for row in self.rows if not row.stage.startswith("decode")]
        if prefix is not None:
            rows = [row for row in self.rows if row.stage.startswith(prefix)]
        elif kinds is not None:
            rows = [row for row in rows if row.kind in kinds]
        return float(sum(row.flops for row in rows))


LLM_KINDS = ("mamba", "attention", "moe", "mlp", "head", "reducer")


def estimate(config, geometry: Geometry, reducer_flops: float = 0.0) -> FlopsTable:
    """Every stage's FLOPs for one run.

    Args:
        config: the model's `NemotronH_Omni_Reasoning_V3_Config` (`lab.config`).
        geometry: what the run's encoders and LLM processed.
        reducer_flops: matrix products an in-LLM reducer adds to score tokens (its `scoring_flops`).
    Returns:
        `FlopsTable` with rows vision / vision projector / audio / audio projector, one per LLM layer
        ("llm.{i}.{kind}" at its length), "llm.head", "llm.reducer" (when non-zero) and one "decode.{kind}" row
        per layer kind (plus "decode.head") for one generated token.
    """
    text = config.text_config
    table = FlopsTable(text_config=text)
    rows = table.rows
    vision = config.vision_config
    sequences = [(1, rows_ * cols, False) for rows_, cols in geometry.image_grids]
    sequences += [(tubelets, rows_ * cols, True) for tubelets, rows_, cols in geometry.videos]
    patches = sum(count * size for count, size, _ in sequences)
    if sequences:
        rows.append(Stage("vision", "vision", -1, patches, vision_tower_flops(vision, sequences)))
        merged = geometry.vision_tokens
        width = config.vision_hidden_size * int(1 / config.downsample_ratio) ** 2
        rows.append(
            Stage(
                "vision projector",
                "projector",
                -1,
                merged,
                projector_flops(width, config.projector_hidden_size, text.hidden_size, merged),
            )
        )
    if geometry.audio is not None and config.audio_config is not None:
        clips, frames = geometry.audio
        audio_config = config.audio_config
        flops, length = audio_tower_flops(audio_config, clips, frames)
        rows.append(Stage("audio", "audio", -1, clips * length, flops))
        rows.append(
            Stage(
                "audio projector",
                "projector",
                -1,
                geometry.audio_tokens,
                projector_flops(
                    audio_config.hidden_size,
                    audio_config.projection_hidden_size,
                    text.hidden_size,
                    geometry.audio_tokens,
                ),
            )
        )
    registry = layer_registry(text)
    lengths = list(geometry.llm_lengths)
    for info, length in zip(registry, lengths, strict=True):
        rows.append(
            Stage(
                f"llm.{info.index}.{info.kind}", info.kind, info.index, length, llm_layer_flops(text, info.kind, length)
            )
        )
    rows.append(Stage("llm.head", "head", -1, 1, head_flops(text)))
    if reducer_flops:
        rows.append(Stage("llm.reducer", "reducer", -1, 0, float(reducer_flops)))
    decode: dict[str, float] = {}
    for info, length in zip(registry, lengths, strict=True):
        decode[info.kind] = decode.get(info.kind, 0.0) + decode_layer_flops(text, info.kind, length + 1)
    for kind, flops in decode.items():
        rows.append(Stage(f"decode.{kind}", kind, -1, 1, flops))
    rows.append(Stage("decode.head", "head", -1, 1, head_flops(text)))
    return table


def llm_prefill_flops(text_config, length: float) -> float:
    """The unreduced LLM prefill (every layer at `length`, plus the head): the cost function of equivalent tokens."""
    return sum(llm_layer_flops(text_config, info.kind, int(length)) for info in layer_registry(text_config)) + (
        head_flops(text_config)
    )


def equivalent_tokens(text_config, prefill_flops: float, upper: int) -> float:
    """The unreduced length whose LLM prefill costs `prefill_flops`, interpolated between whole lengths.

    Args:
        text_config: the LLM's config.
        prefill_flops: the reduced run's LLM prefill FLOPs (layers, head and in-LLM scoring).
        upper: a length known to cost at least that much (the unreduced prompt's).
    """
    if prefill_flops <= llm_prefill_flops(text_config, 1):
        return 1.0 if prefill_flops > 0 else 0.0
    low, high = 1, max(2, int(upper))
    while llm_prefill_flops(text_config, high) < prefill_flops:
        high *= 2
    while high - low > 1:
        middle = (low + high) // 2
        if llm_prefill_flops(text_config, middle) < prefill_flops:
            low = middle
        else:
            high = middle
    below, above = llm_prefill_flops(text_config, low), llm_prefill_flops(text_config, high)
    return float(low + (prefill_flops - below) / max(above - below, 1e-12))


# ------------------------------------------------------------------------------------------ from a run's map
def geometry_of(token_map, prompt, config, reduced: bool) -> Geometry:
    """The `Geometry` of a prompt as run: what the token map says was encoded and what each LLM layer saw.

    Args:
        token_map: the run's token map (every encoded media token has a row, pruned ones included).
        prompt: the prompt whose audio features the tower ran on (`input_features`: the padded batch).
        config: the model's config.
        reduced: False for the unreduced run of the same prompt (every prompt row at every layer).
    """
    columns = {name: token_map[name] for name in ("modality", "item", "row", "col", "tubelet", "kept")}
    modality = columns["modality"]
    merge = round(1 / config.downsample_ratio)
    image_grids, videos = [], []
    for item in np.unique(columns["item"][modality == "image"]):
        mine = (modality == "image") & (columns["item"] == item)
        image_grids.append((int(columns["row"][mine].max() + 1) * merge, int(columns["col"][mine].max() + 1) * merge))
    for item in np.unique(columns["item"][modality == "video"]):
        mine = (modality == "video") & (columns["item"] == item)
        videos.append(
            (
                int(columns["tubelet"][mine].max() + 1),
                int(columns["row"][mine].max() + 1) * merge,
                int(columns["col"][mine].max() + 1) * merge,
            )
        )
    audio = None
    audio_tokens = int((modality == "audio").sum())
    features = prompt.inputs.get("input_features") if prompt is not None else None
    if features is not None and audio_tokens:
        audio = (int(features.shape[0]), int(features.shape[1]))
    prompt_rows = modality != "generated"
    registry = layer_registry(config)
    if not reduced:
        lengths = tuple(int(prompt_rows.sum()) for _ in registry)
    else:
        kept = prompt_rows & columns["kept"]
        dropped_at = token_map["dropped_at_layer"][kept]
        start = int(kept.sum())
        lengths = tuple(start - int(((dropped_at >= 0) & (dropped_at < info.index)).sum()) for info in registry)
    return Geometry(tuple(image_grids), tuple(videos), audio, lengths, audio_tokens)


def summary(config, reduced: FlopsTable, unreduced: FlopsTable) -> dict:
    """JSON-able totals of a reduced run against its unreduced prompt (see `ReductionLedger.flops_summary`)."""
    text = config.text_config

    def groups(table: FlopsTable) -> dict:
        frame = table.frame()
        prefill = frame[~frame.stage.str.startswith("decode")]
        out = {}
        for stage in ("vision", "vision projector", "audio", "audio projector"):
            out[stage] = float(prefill[prefill.stage == stage].flops.sum())
        for kind in ("mamba", "attention", "moe", "mlp", "head", "reducer"):
            out[f"llm {kind}"] = float(
                prefill[prefill.stage.str.startswith("llm.") & (prefill.kind == kind)].flops.sum()
            )
        return {key: value for key, value in out.items() if value}

    llm = reduced.total(prefix="llm.")
    llm_unreduced = unreduced.total(prefix="llm.")
    total, total_unreduced = reduced.total(), unreduced.total()
    first_layer = [row for row in reduced.rows if row.stage.startswith("llm.") and row.layer >= 0]
    first_unreduced = [row for row in unreduced.rows if row.stage.startswith("llm.") and row.layer >= 0]
    tokens = first_layer[0].tokens if first_layer else 0
    tokens_unreduced = first_unreduced[0].tokens if first_unreduced else 0
    equivalent = equivalent_tokens(text, llm, tokens_unreduced) if tokens_unreduced else 0.0
    return {
        "prefill_flops": total,
        "prefill_flops_unreduced": total_unreduced,
        "saved_flops": total_unreduced - total,
        "saved_share": (total_unreduced - total) / total_unreduced if total_unreduced else 0.0,
        "llm_prefill_flops": llm,
        "llm_prefill_flops_unreduced": llm_unreduced,
        "decode_flops_per_token": reduced.total(prefix="decode."),
        "decode_flops_per_token_unreduced": unreduced.total(prefix="decode."),
        "llm_tokens": int(tokens),
        "llm_tokens_unreduced": int(tokens_unreduced),
        "equivalent_tokens": round(equivalent, 2),
        "saved_equivalent_tokens": round(tokens_unreduced - equivalent, 2),
        "stages": groups(reduced),
        "stages_unreduced": groups(unreduced),
    }
