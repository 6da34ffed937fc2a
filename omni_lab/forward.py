"""THE pipeline: encode each modality, merge, reduce, build the token map, prefill, decode.

transformers' `NemotronH_Omni_Reasoning_V3.forward` cannot take an image and a video in one prompt (both fill the
`<image>` placeholder id and its count check sees them together; docs/model_layout.md, "Running it"). omni-lab
therefore calls the model's own encoders (`get_image_features`, `get_video_features`, `get_audio_features`) per
modality, writes each item's embeddings at the positions the token map gives it, applies the reducers, and runs the
model's own language model on `inputs_embeds`. On every input transformers' forward accepts, the logits are the
same (tests/test_parity.py). Decoding reuses the language model's hybrid cache (Mamba states + attention KV).

One linear path, called by every entry point (`Lab.run`, `Lab.stream`, `Lab.logits`, `Lab.prepare`, attribution):

    prepared = prepare(model, prompt, reducers, encoded, session)   # encode -> merge -> reduce -> token map
    for step in decode(model.language_model, prepared.embeds, ...):  # prefill, then one token per step
        ...                                                          # each Step carries its times; the last its stop

Everything comes back as values (`Prepared.timings`, `Step.prefill_s` / `decode_s` / `stop`); the caller hands the
capture session the reduced token map.

Nothing here decides about autograd: callers run it under `torch.inference_mode()` (runs) or with grad enabled
(the gradient path).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import OmniLabInputError
from .modalities import MEDIA
from .reduction import EVS, Reducer, ReductionItem


@dataclass
class EncodedMedia:
    """Post-projector embeddings per item, each `(N_i, D)`, in prompt order, and the prompt they belong to.

    `signals`: {(signal name, modality, item): tensor over the item's tokens} of the encoder signals recorded so far
    (`reduction/signals.py`; filled when a reducer declares them, kept for the next reducer that asks).
    """

    prompt: object
    images: list[torch.Tensor] = field(default_factory=list)
    videos: list[torch.Tensor] = field(default_factory=list)
    audios: list[torch.Tensor] = field(default_factory=list)
    signals: dict = field(default_factory=dict)

    def belongs_to(self, prompt) -> bool:
        """True for the prompt these were encoded from (or a `dataclasses.replace` copy sharing its inputs)."""
        return self.prompt is prompt or self.prompt.inputs is prompt.inputs

    def detached(self) -> EncodedMedia:
        """A copy whose tensors are ordinary (not inference-mode) tensors, for use under autograd."""
        copy = lambda items: [item.clone() if item.is_inference() else item for item in items]  # noqa: E731
        signals = {key: value.clone() if value.is_inference() else value for key, value in self.signals.items()}
        return EncodedMedia(self.prompt, copy(self.images), copy(self.videos), copy(self.audios), signals)

    def missing(self, names) -> tuple[str, ...]:
        """The signal names among `names` not yet recorded for every image and video of the prompt."""
        items = [("image", i) for i in range(len(self.images))] + [("video", i) for i in range(len(self.videos))]
        return tuple(name for name in names if any((name, *item) not in self.signals for item in items))


@dataclass
class Prepared:
    """What the LLM will see for one prompt, and how it was made.

    Attributes:
        prompt: the `Prompt`.
        embeds: `(1, L', D)` merged and reduced input embeddings.
        token_map: the prompt's rows with the reduction applied (`kept`, `score`, `merged_into`, `position`).
        reducers: {modality: reducer} that acted.
        encoded: the `EncodedMedia` the embeddings were merged from.
        keep: `(L,)` bool, per prompt row, whether it reaches the LLM.
        timings: seconds of "encode_s" (encoders + merge) and "reduce_s".
    """

    prompt: object
    embeds: torch.Tensor
    token_map: object
    reducers: dict
    encoded: EncodedMedia
    keep: np.ndarray
    timings: dict = field(default_factory=dict)

    @property
    def input_ids(self) -> torch.Tensor:
        """`(1, L')` ids of the kept positions (media positions hold their placeholder ids)."""
        return self.prompt.input_ids[:, torch.from_numpy(self.keep)]

    def __len__(self) -> int:
        return int(self.embeds.shape[1])


def prepare(model, prompt, reducers: dict, encoded: EncodedMedia | None = None, session=None) -> Prepared:
    """Encode (unless `encoded` is given), merge, reduce and map one prompt: everything before the LLM.

    Args:
        model: transformers' `NemotronH_Omni_Reasoning_V3`.
        prompt: a `Prompt`.
        reducers: {modality: reducer} from `resolve_reducers`.
        encoded: this prompt's `EncodedMedia` (from `Lab.encode`), to skip the encoders.
        session: a capture session whose hooks are installed: its `reduce.{modality}.{item}` points see (and may
            replace) each item's reduced embeddings. When it caches or patches an encoder point, the encoders run
            even if `encoded` is given. The caller hands it the reduced token map (`session.set_token_map`).
    Returns:
        `Prepared`, its `timings` filled.
    """
    timings: dict = {}
    device = model.get_input_embeddings().weight.device
    if encoded is not None and not encoded.belongs_to(prompt):
        raise OmniLabInputError(
            "encoded= holds the media of another prompt; encode this prompt with lab.encode(prompt)"
        )
    wanted = signals_wanted(reducers)
    with timed(timings, "encode_s", device):
        if encoded is None or (session is not None and session.needs_encoders):
            encoded = encode_media(model, prompt, signals=wanted)
        else:
            missing = encoded.missing(wanted)
            if missing:  # encoded earlier without the signals this reducer reads: record them once, keep them
                encoded.signals.update(encode_media(model, prompt, signals=missing).signals)
            if torch.is_grad_enabled():
                encoded = encoded.detached()
        embeds = merge_embeddings(model, prompt, encoded)
    with timed(timings, "reduce_s", device):
        on_reduced = session.on_reduced if session is not None and session.active else None
        reduced = apply_reducers(embeds, prompt, encoded, reducers, on_reduced=on_reduced)
    token_map = prompt.token_map.with_reduction(reduced.keep, reduced.scores, reduced.merged_into)
    return Prepared(prompt, reduced.embeds, token_map, reducers, encoded, reduced.keep, timings)


def pad(prepared: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Several prompts' embeddings as one batch, padded on the right: `(B, L_max, D)` and the `(B, L_max)` attention
    mask (None when every row has the same length). Right padding keeps each row exact in a causal model."""
    lengths = [len(row) for row in prepared]
    first = prepared[0].embeds
    embeds = first.new_zeros(len(prepared), max(lengths), first.shape[-1])
    for index, row in enumerate(prepared):
        embeds[index, : lengths[index]] = row.embeds[0]
    mask = None if len(set(lengths)) == 1 else padding_mask(lengths, max(lengths), first.device)
    return embeds, mask


def padding_mask(lengths: list[int], padded: int, device) -> torch.Tensor:
    """`(B, padded)` long attention mask: 1 on each row's first `lengths[b]` positions, 0 on its padding."""
    return (torch.arange(padded, device=device)[None] < torch.tensor(lengths, device=device)[:, None]).long()


@dataclass
class ReducedSequence:
    """What the LLM will see: `embeds` `(1, L', D)`, `keep` per prompt row, and the reducers' scores per row."""

    embeds: torch.Tensor
    keep: np.ndarray
    scores: np.ndarray
    merged_into: np.ndarray


@contextmanager
def timed(timings: dict, key: str, device: torch.device):
    """Add the wall time of the block to `timings[key]` (synchronising CUDA so the time is real)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def signals_wanted(reducers: dict) -> tuple[str, ...]:
    """The encoder signals the reducers declare (`reducer.signals`), each once."""
    from .reduction import signals

    return signals.check(dict.fromkeys(name for r in reducers.values() for name in getattr(r, "signals", ()) or ()))


def encode_media(model, prompt, signals=()) -> EncodedMedia:
    """Run the model's own encoders + projectors on the prompt's media.

    Args:
        signals: encoder signals to record as well (`reduction/signals.py`), into `EncodedMedia.signals`.
    """
    from .reduction.signals import VisionRecorder, per_item

    inputs = prompt.inputs
    device = model.get_input_embeddings().weight.device
    encoded = EncodedMedia(prompt)
    if prompt.images:
        with VisionRecorder(model, signals) as recorder:
            output = model.get_image_features(inputs["pixel_values"].to(device), inputs["image_grid_hw"].to(device))
        encoded.images = list(output.pooler_output)
        if recorder.names:
            grids = [tuple(grid) for grid in inputs["image_grid_hw"].tolist()]
            for index, found in enumerate(recorder.sequences(grids)):
                encoded.signals.update({(name, "image", index): value for name, value in found.items()})
    if prompt.videos:
        with VisionRecorder(model, signals) as recorder:
            output = model.get_video_features(inputs["pixel_values_videos"].to(device))
        encoded.videos = list(output.pooler_output)
        if recorder.names:
            videos, tubelets = inputs["pixel_values_videos"].shape[:2]
            patch = model.vision_model.patch_size
            grid = tuple(side // patch for side in inputs["pixel_values_videos"].shape[-2:])
            found = per_item(recorder.sequences([grid] * (videos * tubelets)), [tubelets] * videos)
            for index, item in enumerate(found):
                encoded.signals.update({(name, "video", index): value for name, value in item.items()})
    if prompt.audios:
        mask = inputs.get("input_features_mask")
        output = model.get_audio_features(
            inputs["input_features"].to(device), None if mask is None else mask.to(device)
        )
        token_map = prompt.token_map
        counts = [int(token_map.rows(modality="audio", item=i).sum()) for i in range(len(prompt.audios))]
        encoded.audios = list(torch.split(output.pooler_output, counts))
    return encoded


def merge_embeddings(model, prompt, encoded: EncodedMedia) -> torch.Tensor:
    """`(1, L, D)` text embeddings with each media item's embeddings written at its token-map rows."""
    embedding = model.get_input_embeddings()
    input_ids = prompt.inputs["input_ids"].to(embedding.weight.device)
    embeds = embedding(input_ids)
    token_map = prompt.token_map
    for modality, items in (("image", encoded.images), ("video", encoded.videos), ("audio", encoded.audios)):
        for index, features in enumerate(items):
            rows = torch.from_numpy(np.flatnonzero(token_map.rows(modality=modality, item=index))).to(embeds.device)
            if len(rows) != features.shape[0]:
                raise RuntimeError(f"{modality} {index}: {features.shape[0]} embeddings for {len(rows)} positions")
            embeds[0, rows] = features.to(embeds.dtype)
    return embeds


def resolve_reducers(reducer, config) -> dict[str, Reducer]:
    """Normalise `run(reducer=...)` into {modality: reducer}.

    "model" means what the model does by itself: EVS at `config.video_pruning_rate` on video (when > 0). None means
    no reduction. A reducer acts on the modalities it lists; a dict assigns reducers per modality.
    """
    if reducer is None:
        return {}
    if isinstance(reducer, str):
        if reducer != "model":
            raise OmniLabInputError(f"reducer {reducer!r}: pass a reducer object, a dict per modality, None or 'model'")
        rate = float(getattr(config, "video_pruning_rate", 0.0) or 0.0)
        return {"video": EVS(rate)} if rate > 0 else {}
    if getattr(reducer, "in_llm", False):
        raise OmniLabInputError(f"{reducer!r} acts inside the LLM; pass it as reducer= to run() or logits()")
    if isinstance(reducer, dict):
        unknown = set(reducer) - set(MEDIA)
        if unknown:
            raise OmniLabInputError(f"reducer dict has unknown modalities {sorted(unknown)}; use image, video, audio")
        chosen = {}
        for modality, value in reducer.items():
            if value is None:
                continue
            _check_reducer(value)
            if modality not in value.modalities:
                raise OmniLabInputError(f"{value!r} does not act on {modality} (it acts on {value.modalities})")
            chosen[modality] = value
        return chosen
    _check_reducer(reducer)
    return {modality: reducer for modality in reducer.modalities}


def rewrite_media(prompt, reducers: dict, processor, context_length: int):
    """The prompt the encoders will see: itself, or rebuilt by the reducers that act before the encoders
    (`before_encoders`, e.g. `Downsample`), each object once with the modalities it was given.

    Returns:
        the `Prompt` to encode and run (the same object when no reducer rewrites it).
    """
    by_reducer: dict[int, tuple] = {}
    for modality, reducer in reducers.items():
        if getattr(reducer, "before_encoders", False):
            entry = by_reducer.setdefault(id(reducer), (reducer, []))
            entry[1].append(modality)
    for reducer, modalities in by_reducer.values():
        if any(prompt.images if m == "image" else prompt.videos if m == "video" else prompt.audios for m in modalities):
            prompt = reducer.rewrite(prompt, tuple(modalities), processor, context_length)
    return prompt


def with_llm_drops(token_map, decision):
    """The token map with an in-LLM reducer's decision written in: one `LLMDrop` (FastV) or a sequence of stages
    (`reduction.in_llm.LLMStage`), each recording which positions left after which layer."""
    if decision is None:
        return token_map
    for drop in decision if isinstance(decision, (tuple, list)) else [decision]:
        token_map = token_map.with_llm_drop(drop.layer, drop.keep, drop.scores)
    return token_map


def split_in_llm(reducer):
    """(the reducers acting before the LLM, the in-LLM reducer or None) from `run(reducer=...)`."""
    if getattr(reducer, "in_llm", False):
        return None, reducer
    if isinstance(reducer, dict) and "llm" in reducer:
        rest = {key: value for key, value in reducer.items() if key != "llm"}
        in_llm = reducer["llm"]
        if not getattr(in_llm, "in_llm", False):
            raise OmniLabInputError(f"reducer['llm'] must be an in-LLM reducer such as FastV, got {in_llm!r}")
        return rest, in_llm
    return reducer, None


def _check_reducer(value) -> None:
    if isinstance(value, type):
        raise OmniLabInputError(
            f"reducer={value.__name__} is a class; pass an instance with its rate, e.g. reducer={value.__name__}(0.5), "
            f'or a name through ol.reducers.at_rate("{value.__name__.lower()}", 0.5)'
        )
    if not isinstance(value, Reducer):
        raise OmniLabInputError(
            f"reducer {value!r} is not a reducer: it needs a `modalities` tuple and a __call__(item) -> Reduction"
        )


def apply_reducers(
    embeds: torch.Tensor, prompt, encoded: EncodedMedia, reducers: dict[str, Reducer], on_reduced=None
) -> ReducedSequence:
    """Ask each reducer about each item of its modality and drop the rows it does not keep.

    `on_reduced(modality, index, kept_embeddings) -> kept_embeddings`, when given, sees (and may replace) each
    media item's embeddings as they will enter the LLM: the hook point `reduce.{modality}.{index}`.
    """
    token_map = prompt.token_map
    rows_total = len(token_map)
    keep = np.ones(rows_total, dtype=bool)
    scores = np.full(rows_total, np.nan)
    merged_into = np.full(rows_total, -1, dtype=np.int64)
    media_by_modality = {"image": prompt.images, "video": prompt.videos, "audio": prompt.audios}
    features_by_modality = {"image": encoded.images, "video": encoded.videos, "audio": encoded.audios}
    for modality, reducer in reducers.items():
        for index, features in enumerate(features_by_modality[modality]):
            rows = np.flatnonzero(token_map.rows(modality=modality, item=index))
            item = ReductionItem(
                modality,
                index,
                features,
                _grid(token_map, rows, modality),
                media_by_modality[modality][index],
                token_map.df.iloc[rows],
                {
                    name: encoded.signals[(name, modality, index)]
                    for name in getattr(reducer, "signals", ()) or ()
                    if (name, modality, index) in encoded.signals
                },
            )
            reduction = reducer(item)
            item_keep = reduction.keep.detach().cpu().numpy().astype(bool)
            if reduction.scores is not None and tuple(reduction.scores.shape) != (len(rows),):
                raise OmniLabInputError(
                    f"reducer {reducer!r} returned scores of shape {tuple(reduction.scores.shape)} for {modality} "
                    f"{index}; they must have shape ({len(rows)},), one per token of the item, or be None"
                )
            if item_keep.shape != (len(rows),):
                raise OmniLabInputError(
                    f"reducer {reducer!r} returned a keep mask of shape {item_keep.shape} for {modality} {index}; "
                    f"it must be a bool tensor of shape ({len(rows)},), one entry per token of the item"
                )
            keep[rows] = item_keep
            if reduction.scores is not None:
                scores[rows] = reduction.scores.detach().float().cpu().numpy()
            if reduction.merged_into is not None:
                local = reduction.merged_into.detach().cpu().numpy().astype(np.int64)
                _check_merges(reducer, local, item_keep)
                merged_into[rows] = np.where(local >= 0, rows[np.clip(local, 0, None)], -1)
                embeds[0, torch.from_numpy(rows).to(embeds.device)] = merge_groups(features, item_keep, local).to(
                    embeds.dtype
                )
    if on_reduced is not None:
        for modality, items in features_by_modality.items():
            for index in range(len(items)):
                rows = np.flatnonzero(token_map.rows(modality=modality, item=index) & keep)
                index_tensor = torch.from_numpy(rows).to(embeds.device)
                embeds[0, index_tensor] = on_reduced(modality, index, embeds[0, index_tensor]).to(embeds.dtype)
    kept_embeds = embeds[:, torch.from_numpy(keep).to(embeds.device)] if not keep.all() else embeds
    return ReducedSequence(kept_embeds, keep, scores, merged_into)


def _check_merges(reducer, merged_into: np.ndarray, keep: np.ndarray) -> None:
    if merged_into.shape != keep.shape:
        raise OmniLabInputError(
            f"reducer {reducer!r} returned merged_into of shape {merged_into.shape}; it must have shape {keep.shape} "
            "(per token: the index of the kept token it merged into, or -1)"
        )
    targets = merged_into[merged_into >= 0]
    if len(targets) and (targets.max() >= len(keep) or not keep[targets].all() or keep[merged_into >= 0].any()):
        raise OmniLabInputError(
            f"reducer {reducer!r}: merged_into must point dropped tokens at kept tokens of the same item "
            f"(indices 0..{len(keep) - 1}), and -1 for tokens not merged"
        )


def merge_groups(features: torch.Tensor, keep: np.ndarray, merged_into: np.ndarray) -> torch.Tensor:
    """`(N, D)` embeddings where each kept token is the mean of itself and the tokens merged into it.

    Dropped tokens that were merged nowhere, and dropped tokens themselves, keep their own (unused) embeddings.
    """
    group = np.where(keep, np.arange(len(keep)), merged_into)  # (N,): the kept token each token belongs to
    members = group >= 0
    index = torch.from_numpy(group[members]).to(features.device)
    selected = features[torch.from_numpy(members).to(features.device)].float()
    sums = torch.zeros_like(features, dtype=torch.float32).index_add_(0, index, selected)
    sizes = torch.bincount(index, minlength=len(keep)).clamp(min=1)  # (N,)
    merged = features.clone()
    kept = torch.from_numpy(keep).to(features.device)
    merged[kept] = (sums[kept] / sizes[kept, None]).to(features.dtype)
    return merged


def _grid(token_map, rows: np.ndarray, modality: str) -> tuple[int, ...]:
    if modality == "audio":
        return (len(rows),)
    grid_rows = int(token_map["row"][rows].max()) + 1
    grid_cols = int(token_map["col"][rows].max()) + 1
    return (len(rows) // (grid_rows * grid_cols), grid_rows, grid_cols)


def choose_token(logits: torch.Tensor, settings, generator: torch.Generator | None) -> int:
    """Greedy argmax, or a sample after temperature, top-k and top-p (transformers' own logits warpers).

    Args:
        settings: the `RunOptions` (do_sample, temperature, top_k, top_p).
    """
    if not settings.do_sample:
        return int(torch.argmax(logits))
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = logits.float()[None]
    if settings.temperature != 1.0:
        scores = TemperatureLogitsWarper(settings.temperature)(None, scores)
    if settings.top_k:
        scores = TopKLogitsWarper(settings.top_k)(None, scores)
    if settings.top_p < 1.0:
        scores = TopPLogitsWarper(settings.top_p)(None, scores)
    probabilities = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probabilities[0].cpu(), 1, generator=generator))


@dataclass
class Step:
    """One decoded token and what it cost.

    Attributes:
        index: its index in the answer (0: the token the prefill chose).
        id: the token id.
        logits: the float32 logits (on CPU) it was chosen from, when kept.
        prefill_s: seconds of the prefill forward (step 0 only; 0 after).
        decode_s: seconds spent choosing it, plus (after step 0) the forward that produced its logits.
        stop: None while decoding goes on; on the last step, why it stopped: "eos" or "max_new_tokens".
    """

    index: int
    id: int
    logits: torch.Tensor | None = None
    prefill_s: float = 0.0
    decode_s: float = 0.0
    stop: str | None = None


def decode(
    language_model,
    embeds: torch.Tensor,
    max_new_tokens: int,
    eos_ids: set[int],
    settings,
    keep_logits: bool = False,
    thinking_budget: int | None = None,
    think_end_id: int | None = None,
):
    """Prefill on `embeds` `(1, L, D)`, then decode token by token with the hybrid cache, yielding each `Step`.

    With `thinking_budget` (a prompt that opened its answer with `<think>`), a reasoning still open after that many
    tokens is closed: `think_end_id` is the next token whatever the model chose (its logits are still the model's),
    and decoding goes on to the answer.

    `settings` is the run's `RunOptions` (greedy or sampling, and the seed). Each step carries its own times (the consumer's time between steps is not counted) and the last one says why
    decoding stopped (`Step.stop`). Nothing is yielded when `max_new_tokens` is 0.
    """
    device = embeds.device
    generator = torch.Generator().manual_seed(settings.seed) if settings.seed is not None else None
    times: dict = {}
    with timed(times, "prefill_s", device):
        output = language_model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
    cache, next_logits = output.cache, output.logits[0, -1]
    reasoning_open = thinking_budget is not None
    for index in range(max_new_tokens):
        with timed(times, "decode_s", device):
            token = choose_token(next_logits, settings, generator)
            if reasoning_open and index >= thinking_budget:
                token = think_end_id  # the budget is spent: close the reasoning; the answer follows
            reasoning_open = reasoning_open and token != think_end_id
            logits = next_logits.float().cpu() if keep_logits else None
        stop = "eos" if token in eos_ids else "max_new_tokens" if index + 1 == max_new_tokens else None
        yield Step(index, token, logits, times.pop("prefill_s", 0.0), times.pop("decode_s"), stop)
        if stop is not None:
            return
        with timed(times, "decode_s", device):  # counted with the next step, which these logits choose
            output = language_model(
                input_ids=torch.tensor([[token]], device=device), cache=cache, use_cache=True, logits_to_keep=1
            )
            cache, next_logits = output.cache, output.logits[0, -1]
