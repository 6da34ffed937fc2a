"""Lab: load Nemotron 3 Nano Omni from any source, build prompts, run them; Run: what one run produced.

lab = ol.load("random:small")
p = lab.prompt("Which way does the square move?", video="clip.mp4", audio="beeps.wav")
run = lab.run(p, max_new_tokens=32)
run.answer, run.token_map.df, run.timings
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from . import forward, validate
from .capture import budget as capture_budget_module
from .capture import specs as capture_specs
from .capture.hooks import hook_points
from .capture.results import ModalityMass, Routing
from .capture.session import CaptureSession
from .errors import OmniLabInputError, OmniLabModelError
from .logs import quiet_expected_warnings
from .presets import RELEASED_PARAMETER_COUNT, layers
from .prompt import Prompt, build_prompt, token_texts
from .reduction.ledger import ReductionLedger, build_ledger
from .sources import Source, build_model, check_device, resolve
from .token_map import TokenMap


def load(
    source: str, device: str = "cpu", dtype=None, *, seed: int = 0, allow_download: bool = False, progress: bool = True
) -> Lab:
    """Load a model and its processor.

    Args:
        source: "toy" (the shipped trained twin), "random:toy" / "random:small" / "random:full" (random weights;
            "full" is the released architecture), a local checkpoint directory, or a hub id such as
            "nvidia/Nemotron-3-Nano-Omni-30B-A3B-Reasoning-BF16" (looked up in the local Hugging Face cache).
        device: "cpu", "cuda", "cuda:1", "meta" (architecture only, no weights) or "auto" (accelerate's
            `device_map="auto"` across GPUs, for checkpoints).
        dtype: torch dtype or its name; default float32 for presets and on CPU, bfloat16 for checkpoints on GPU.
        seed: initialisation seed of the random presets (the same seed gives the same weights).
        allow_download: let a hub id download missing files (off by default: nothing downloads unless asked).
        progress: print load progress for checkpoints to stderr.
    Returns:
        `Lab`.
    Raises:
        OmniLabModelError: unknown source, missing files (named, with where omni-lab looked and how to get them),
            a quantised checkpoint this device cannot run.
    """
    quiet_expected_warnings()
    resolved = resolve(source, allow_download=allow_download)
    device = check_device(device)
    model, processor, dtype = build_model(resolved, device, dtype, seed=seed, progress=progress)
    if dtype == torch.float64:  # transformers' grouped-GEMM experts take float32/16 only; its eager experts any dtype
        model.set_experts_implementation("eager")
    return Lab(model, processor, resolved, str(device), dtype)


@dataclass(frozen=True)
class StreamToken:
    """One token of a streamed answer (`Lab.stream`).

    Attributes:
        index: 0 for the first generated token.
        id: the token id.
        token: the token's own text (special tokens included, e.g. "</think>").
        text: what the token adds to the decoded text (special tokens skipped): append it to show the answer.
        logits: `(vocab,)` float32 logits it was chosen from, when `return_logits=True`.
    """

    index: int
    id: int
    token: str
    text: str
    logits: torch.Tensor | None = None


@dataclass
class Run:
    """What one `Lab.run` produced.

    Attributes:
        prompt: the `Prompt` that was run.
        answer: the generated text (after `</think>` when thinking; special tokens removed).
        reasoning: the text between `<think>` and `</think>` when the model reasoned, else None.
        token_ids: `(positions,)` ids of the sequence the LLM saw (media positions hold placeholder ids) followed by
            the generated ids.
        generated_ids: the generated ids alone.
        token_map: the prompt's rows (pruned ones `kept=False`) plus one `generated` row per new token.
        timings: seconds for "encode_s", "reduce_s", "prefill_s", "decode_s" (and "total_s").
        logits: `(steps, vocab)` float32 logits each generated token was chosen from, when asked for.
        stop_reason: "eos" or "max_new_tokens".
        reducers: {modality: reducer} that acted.
        routing: `Routing` when captured.
        attention_mass, mamba_mass: `ModalityMass` when captured.
        residual: DataFrame (layer, kind, position, residual_norm, mixer_norm, cosine) when captured.
        cache: {hook name: tensor} of the activations asked for with `cache=[...]`.
        interventions: the interventions that acted.
        ledger: `ReductionLedger`: every reduction stage of every media item, and the tokens each dropped.
    """

    prompt: Prompt
    answer: str
    reasoning: str | None
    token_ids: torch.Tensor
    generated_ids: list[int]
    token_map: TokenMap
    timings: dict
    logits: torch.Tensor | None = None
    stop_reason: str = "max_new_tokens"
    reducers: dict = field(default_factory=dict)
    routing: Routing | None = None
    attention_mass: ModalityMass | None = None
    mamba_mass: ModalityMass | None = None
    residual: pd.DataFrame | None = None
    cache: dict = field(default_factory=dict)
    interventions: list = field(default_factory=list)
    ledger: ReductionLedger | None = None

    def to_dict(self) -> dict:
        """A JSON-able summary: the answer, tokens per modality before and after reduction, timings, speed, what
        acted and what was captured (tensors are left out; use the attributes for them)."""
        before = self.prompt.token_map.counts()
        after = self.token_map.counts(kept=True)
        after.pop("generated", None)
        decode_s = self.timings.get("decode_s", 0.0)
        steps = max(0, len(self.generated_ids) - 1)  # the first token comes from the prefill
        captured = ["routing", "attention_mass", "mamba_mass", "residual"]
        return {
            "answer": self.answer,
            "reasoning": self.reasoning,
            "stop_reason": self.stop_reason,
            "generated_ids": [int(i) for i in self.generated_ids],
            "prompt": {
                "text": self.prompt.text,
                "images": len(self.prompt.images),
                "videos": len(self.prompt.videos),
                "audios": len(self.prompt.audios),
                "thinking": self.prompt.thinking,
            },
            "tokens_before": before,
            "tokens_after": after,
            "tokens_total": {"before": sum(before.values()), "after": sum(after.values())},
            "timings": {key: round(float(value), 6) for key, value in self.timings.items()},
            "tokens_per_second": round(steps / decode_s, 3) if steps and decode_s > 0 else None,
            "reducers": {modality: repr(reducer) for modality, reducer in self.reducers.items()},
            "interventions": [repr(intervention) for intervention in self.interventions],
            "captures": [name for name in captured if getattr(self, name) is not None],
            "cache": sorted(self.cache),
        }

    def __repr__(self) -> str:
        kept = self.token_map.num_positions - len(self.generated_ids)
        return (
            f"Run(answer={self.answer!r}, {kept} prompt positions of {len(self.prompt)}, "
            f"{len(self.generated_ids)} generated, stop={self.stop_reason})"
        )


class Lab:
    """A loaded model with its processor; builds prompts and runs them.

    Attributes:
        model: transformers' `NemotronH_Omni_Reasoning_V3` (never modified by omni-lab).
        processor: the model's own processor (tokenizer, chat template, image/video/audio processors).
        source: the resolved `Source`.
    """

    def __init__(self, model, processor, source: Source, device: str, dtype: torch.dtype):
        self.model = model
        self.processor = processor
        self.source = source
        self.device = device
        self.dtype = dtype
        # Hooks sit on the one shared model: one run at a time. A plain Lock (not an RLock) because a streamed run
        # may be resumed on another thread than the one that started it (Gradio does).
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------- facts
    @property
    def config(self):
        return self.model.config

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def context_length(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    @property
    def layer_pattern(self) -> str:
        """The LLM's layers as the release writes them: M = Mamba-2, E = MoE, * = attention, - = MLP."""
        return self.config.text_config.hybrid_override_pattern

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        for value in (
            self.config.text_config.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
            self.tokenizer.eos_token_id,
        ):
            if value is None:
                continue
            ids.update(value if isinstance(value, (list, tuple)) else [value])
        return ids

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component, and what a checkpoint stores.

        transformers' RADIO blocks carry identity layer-scale vectors (`layer_scale{1,2}.lambda1`, all ones) that
        C-RADIO has not got and the released safetensors do not store; they are counted separately so the
        checkpoint figure matches the release (33,015,546,816 for the full architecture).
        """
        model = self.model
        language = model.language_model
        counts: dict[str, int] = {
            "llm.embeddings": language.model.embeddings.weight.numel(),
            "llm.lm_head": language.lm_head.weight.numel(),
        }
        norms = language.model.norm_f.weight.numel()
        for layer, info in zip(language.model.layers, layers(model), strict=True):
            norms += layer.norm.weight.numel()
            key = f"llm.{info.kind}"
            counts[key] = counts.get(key, 0) + sum(p.numel() for p in layer.mixer.parameters())
        counts["llm.norms"] = norms
        layer_scale = sum(p.numel() for name, p in model.vision_model.named_parameters() if "layer_scale" in name)
        counts["vision.tower"] = sum(p.numel() for p in model.vision_model.parameters()) - layer_scale
        counts["vision.projector"] = sum(p.numel() for p in model.multi_modal_projector.parameters())
        if model.audio_tower is not None:
            counts["audio.tower"] = sum(p.numel() for p in model.audio_tower.parameters())
            counts["audio.projector"] = sum(p.numel() for p in model.embed_audio.parameters())
        counts["checkpoint"] = sum(value for value in counts.values())
        counts["vision.layer_scale_identity"] = layer_scale
        counts["module_total"] = sum(p.numel() for p in model.parameters())
        return counts

    def info(self) -> dict:
        """Architecture summary: layer pattern, parameter counts, token budgets."""
        config, text = self.config, self.config.text_config
        image_processor, video_processor = self.processor.image_processor, self.processor.video_processor
        merge = round(1 / image_processor.downsample_ratio) ** 2
        counts = self.parameter_counts()
        registry = layers(self.model)
        kinds = [info.kind for info in registry]
        return {
            "source": self.source.spec,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "layer_pattern": self.layer_pattern,
            "layers": {
                "total": len(registry),
                "mamba": kinds.count("mamba"),
                "moe": kinds.count("moe"),
                "attention": kinds.count("attention"),
            },
            "attention_layers": [info.index for info in registry if info.kind == "attention"],
            "hidden_size": text.hidden_size,
            "experts": {
                "routed": text.n_routed_experts,
                "top_k": text.num_experts_per_tok,
                "shared": text.n_shared_experts,
                "routed_scaling_factor": text.routed_scaling_factor,
            },
            "parameters": counts,
            "matches_release": counts["checkpoint"] == RELEASED_PARAMETER_COUNT,
            "budgets": {
                "context_tokens": self.context_length,
                "image_tokens": [image_processor.min_num_patches // merge, image_processor.max_num_patches // merge],
                "video_tokens_per_tubelet": video_processor.video_target_num_patches // merge,
                "video_frames_per_tubelet": config.video_temporal_patch_size,
                "video_pruning_rate": config.video_pruning_rate,
                "audio_tokens_per_second": 16000 / 160 / config.audio_config.subsampling_factor
                if config.audio_config is not None
                else None,
            },
        }

    def hook_names(self, prompt: Prompt | None = None) -> list[str]:
        """Every stable hook name of this model (with `prompt`, also its `reduce.{modality}.{item}` points)."""
        return list(hook_points(self.model, prompt))

    def __repr__(self) -> str:
        return f"Lab({self.source.spec!r}, device={self.device}, dtype={self.dtype}, layers={self.layer_pattern})"

    # ---------------------------------------------------------------------------------------------- prompts
    def prompt(
        self,
        text: str,
        images=None,
        video=None,
        audio=None,
        system: str | None = None,
        thinking: bool = False,
        *,
        fps: float | None = 1.0,
        max_frames: int = 128,
        reference: str | None = None,
    ) -> Prompt:
        """Build a prompt with the model's own chat template and processor.

        Args:
            text: the question. Control tokens typed in it ("<image>", "<so_embedding>", ...) stay plain text.
            images: one image or a list (paths, PIL images, arrays).
            video: a video (path, `VideoClip`, `(T, H, W, 3)` array, list of frames) or a list of videos of one size.
            audio: a clip (path, `AudioClip`, `(waveform, rate)`) or a list; resampled to 16 kHz mono.
            system: optional system message.
            thinking: open the answer with `<think>` (reasoning on) instead of `<think></think>`.
            fps, max_frames: frame sampling for video files.
            reference: the expected answer, when known (studies score runs against it).
        Returns:
            `Prompt` with the processor's tensors and the token map.
        """
        return build_prompt(
            self.processor,
            self.context_length,
            text,
            images=images,
            video=video,
            audio=audio,
            system=system,
            thinking=thinking,
            fps=fps,
            max_frames=max_frames,
            reference=reference,
        )

    # -------------------------------------------------------------------------------------------------- runs
    def _check_runnable(self) -> None:
        if self.model.get_input_embeddings().weight.is_meta:
            raise OmniLabModelError(
                f"{self.source.spec} was loaded on the meta device: it has an architecture but no weights. Load it "
                "with device='cpu' or 'cuda' to run prompts."
            )

    def as_prompt(self, prompt) -> Prompt:
        """`prompt` itself when it is a `Prompt`; a text-only prompt for a string; OmniLabInputError otherwise."""
        if isinstance(prompt, Prompt):
            return prompt
        if isinstance(prompt, str):
            return self.prompt(prompt)
        raise OmniLabInputError(f"expected a Prompt (from lab.prompt(...)) or a string, got {type(prompt).__name__}")

    def encode(self, prompt) -> forward.EncodedMedia:
        """Run the model's media encoders and projectors once; pass the result as `encoded=` to `run`, `stream`,
        `logits`, `prepare` or `embeds` to reuse it across runs of the same prompt (studies and widgets do)."""
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        with self._lock, torch.inference_mode():
            return forward.encode_media(self.model, prompt)

    def prepare(self, prompt, reducer="model", encoded: forward.EncodedMedia | None = None) -> forward.Prepared:
        """Everything before the LLM, without running it: the merged, reduced embeddings and the reduced token map.

        With `encoded=lab.encode(prompt)` only the merge and the reducers run (what a widget's rate slider needs).
        In-LLM reducers (FastV) act during the forward and are not accepted here.
        """
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        reducers = self._reducers_before_llm(reducer)
        with self._lock, torch.inference_mode():
            return forward.prepare(self.model, prompt, reducers, encoded)

    def embeds(self, prompt, reducer="model", encoded: forward.EncodedMedia | None = None) -> forward.Prepared:
        """`prepare` with autograd on: the gradient path attribution uses.

        `prepared.embeds` `(1, L', D)` is part of an autograd graph (through the encoders and projectors when
        `encoded` is None), so `torch.autograd.grad(f(lab.forward_embeds(prepared.embeds, ...)), prepared.embeds)`
        works; detach it and `requires_grad_()` for a leaf.
        """
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        reducers = self._reducers_before_llm(reducer)
        with self._lock, torch.enable_grad():
            return forward.prepare(self.model, prompt, reducers, encoded)

    def forward_embeds(
        self, embeds: torch.Tensor, token_map: TokenMap, *, interventions=None, logits_to_keep: int = 0
    ) -> torch.Tensor:
        """The language model on given input embeddings, autograd on: `(B, L, vocab)` float32 logits (float64 for a
        float64 model).

        Args:
            embeds: `(B, L, D)` (or `(L, D)`); every batch row laid out like `token_map`'s kept positions (extra
                positions after them count as generated tokens, e.g. a teacher-forced answer).
            token_map: the reduced token map the embeddings follow (`prepared.token_map`); interventions select
                positions through it.
            interventions: `ol.ablate_tokens(...)`, `ol.ablate_experts(...)`, ... honoured as in `run`.
            logits_to_keep: return logits of the last this many positions only (0: all). A 35K-token prompt's
                logits over the real vocabulary are ~18 GB in float32; a teacher-forced answer needs a handful.
        """
        self._check_runnable()
        if not isinstance(embeds, torch.Tensor) or embeds.dim() not in (2, 3):
            raise OmniLabInputError(
                "forward_embeds takes embeddings of shape (B, L, D) or (L, D), e.g. prepared.embeds"
            )
        if embeds.dim() == 2:
            embeds = embeds[None]
        hidden = self.config.text_config.hidden_size
        if embeds.shape[-1] != hidden:
            raise OmniLabInputError(f"embeddings have width {embeds.shape[-1]}; this model's LLM takes {hidden}")
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise OmniLabInputError(f"logits_to_keep must be an int >= 0 (0 keeps all), got {logits_to_keep!r}")
        if not isinstance(token_map, TokenMap):
            raise OmniLabInputError("forward_embeds needs the token map the embeddings follow (prepared.token_map)")
        session = CaptureSession(self.model, None, {}, interventions=interventions)
        with self._lock, torch.enable_grad(), session.installed():
            session.set_token_map(token_map)
            parameter = self.model.get_input_embeddings().weight
            language = self.model.language_model
            # transformers' causal-LM forward is backbone -> lm_head -> .float(); the head is applied here so that a
            # float64 model keeps float64 logits (finite-difference checks need them).
            hidden = language.model(inputs_embeds=embeds.to(parameter.device, parameter.dtype)).last_hidden_state
            logits = language.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
            return logits if logits.dtype == torch.float64 else logits.float()

    def logits(self, prompt, reducer="model", interventions=None, encoded=None) -> torch.Tensor:
        """`(1, L', vocab)` float32 logits at every position of the (reduced) prompt from the merged forward."""
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        reducer, in_llm = forward.split_in_llm(reducer)
        reducers = forward.resolve_reducers(reducer, self.config)
        session = CaptureSession(self.model, prompt, {}, interventions=interventions, in_llm=in_llm)
        with self._lock, torch.inference_mode(), session.installed():
            prepared = forward.prepare(self.model, prompt, reducers, encoded, session)
            return self.model.language_model(inputs_embeds=prepared.embeds).logits.float()

    def run(
        self,
        prompt,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        reducer="model",
        return_logits: bool = False,
        capture=None,
        cache=None,
        interventions=None,
        cache_device="cpu",
        cache_dtype=None,
        capture_budget: int | None = None,
        encoded: forward.EncodedMedia | None = None,
    ) -> Run:
        """Run a prompt: encode media, merge, reduce, prefill, decode.

        Args:
            prompt: a `Prompt`, or a string for a text-only prompt.
            max_new_tokens: generation stops here or at the model's end tokens.
            do_sample: sample instead of greedy argmax (with temperature, top_k, top_p; `seed` for repeatability).
            reducer: "model" (the model's own EVS at `config.video_pruning_rate`), None (no reduction), a reducer
                (acts on the modalities it names), or {"video": reducer, "audio": reducer, ...}; an in-LLM reducer
                (`FastV`) alone or as {"llm": FastV(...), "video": ...}.
            return_logits: keep the logits each new token was chosen from (`run.logits`).
            capture: names or specs: "routing", "attention_mass", "mamba_mass", "residual", or
                `ol.capture.routing(scores=True)`, `ol.capture.attention_mass(segments="frame", queries="answer")`...
            cache: hook names or glob patterns (`lab.hook_names()`) whose values to keep in `run.cache`.
            interventions: `ol.ablate_tokens(...)`, `ol.ablate_experts(...)`, `ol.force_experts(...)`,
                `ol.patch(...)`; their hooks are removed when the run ends, also when it raises.
            cache_device, cache_dtype: where cached tensors go ("cpu") and their dtype (e.g. torch.float16).
            capture_budget: bytes the captures may take (default `omni_lab.capture.BUDGET_BYTES`, 8 GiB); past it
                the run is refused with the estimate before anything runs.
            encoded: this prompt's media from `lab.encode(prompt)`, to skip the encoders (timings then show
                encode_s for the merge only).
        Returns:
            `Run`. The same as the last item `stream` yields for the same arguments.
        """
        *_, run = self.stream(
            prompt,
            max_new_tokens,
            do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            reducer=reducer,
            return_logits=return_logits,
            capture=capture,
            cache=cache,
            interventions=interventions,
            cache_device=cache_device,
            cache_dtype=cache_dtype,
            capture_budget=capture_budget,
            encoded=encoded,
        )
        return run

    def stream(
        self,
        prompt,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        reducer="model",
        return_logits: bool = False,
        capture=None,
        cache=None,
        interventions=None,
        cache_device="cpu",
        cache_dtype=None,
        capture_budget: int | None = None,
        encoded: forward.EncodedMedia | None = None,
    ):
        """`run`, token by token: yields a `StreamToken` per decoded token as soon as it is chosen, then the `Run`.

        Takes `run`'s arguments. Arguments are checked (and the capture budget applied) when this is called, before
        anything runs. The Lab is held from the first token to the Run: close the iterator (or let it be collected)
        to give it back early.

            for item in lab.stream(p, max_new_tokens=16):
                if isinstance(item, ol.Run): run = item
                else: print(item.text, end="", flush=True)
        """
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        max_new_tokens = validate.number(
            "max_new_tokens", max_new_tokens, low=0, high=self.context_length, integer=True
        )
        return_logits = validate.flag("return_logits", return_logits)
        settings = forward.SamplingSettings(do_sample, temperature, top_k, top_p, seed)
        settings.validate()
        reducer, in_llm = forward.split_in_llm(reducer)
        reducers = forward.resolve_reducers(reducer, self.config)
        session = CaptureSession(
            self.model,
            prompt,
            capture_specs.normalise(capture),
            cache=cache,
            interventions=interventions,
            cache_device=cache_device,
            cache_dtype=cache_dtype,
            in_llm=in_llm,
        )
        if in_llm is not None and (
            session.captures or any(name.startswith("llm.") for name in [*session.cache_names, *session.patches])
        ):
            raise OmniLabInputError(
                f"{in_llm!r} shortens the sequence inside the LLM, and captures / LLM interventions index the full "
                "sequence's positions: run them without the in-LLM reducer"
            )
        if session.captures or session.cache_names:
            capture_budget_module.check(session.estimate_bytes(max_new_tokens), capture_budget)
        interventions = list(interventions or [])
        return self._stream(
            prompt, max_new_tokens, settings, reducers, in_llm, session, interventions, return_logits, encoded
        )

    @torch.inference_mode()
    def _stream(
        self, prompt, max_new_tokens, settings, reducers, in_llm, session, interventions, return_logits, encoded
    ):
        timings: dict = {}
        tokens: list[int] = []
        logits: list[torch.Tensor] = []
        with self._lock:
            started = time.perf_counter()
            with session.installed():
                prepared = forward.prepare(self.model, prompt, reducers, encoded, session, timings)
                length = len(prepared)
                if length + max_new_tokens > self.context_length:
                    raise OmniLabInputError(
                        f"{length} prompt tokens + max_new_tokens={max_new_tokens} exceed the {self.context_length}-"
                        f"token context; lower max_new_tokens or shorten the prompt"
                    )
                steps = forward.decode(
                    self.model.language_model,
                    prepared.embeds,
                    max_new_tokens,
                    self.eos_token_ids,
                    settings,
                    timings,
                    keep_logits=return_logits,
                )
                text_so_far = ""
                while True:
                    try:
                        step = next(steps)
                    except StopIteration as stop:
                        stop_reason = stop.value
                        break
                    tokens.append(step.id)
                    if step.logits is not None:
                        logits.append(step.logits)
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    yield StreamToken(
                        step.index, step.id, self._token_texts([step.id])[0], text[len(text_so_far) :], step.logits
                    )
                    text_so_far = text
            token_map = prepared.token_map.with_generated(tokens, self._token_texts(tokens))
            results = session.finish(token_map)
            reducers = dict(prepared.reducers)
            if results.llm_drop is not None:
                drop = results.llm_drop
                token_map = token_map.with_llm_drop(drop.layer, drop.keep, drop.scores)
                reducers["llm"] = in_llm
            timings["total_s"] = time.perf_counter() - started
        answer, reasoning = self._split_answer(tokens, prompt.thinking)
        yield Run(
            prompt=prompt,
            answer=answer,
            reasoning=reasoning,
            token_ids=torch.cat([prepared.input_ids[0], torch.tensor(tokens, dtype=prepared.input_ids.dtype)]),
            generated_ids=tokens,
            token_map=token_map,
            timings=timings,
            logits=torch.stack(logits) if logits else None,
            stop_reason=stop_reason,
            reducers=reducers,
            routing=results.routing,
            attention_mass=results.attention_mass,
            mamba_mass=results.mamba_mass,
            residual=results.residual,
            cache=results.cache,
            interventions=interventions,
            ledger=build_ledger(prompt, reducers, token_map, self.processor),
        )

    def _reducers_before_llm(self, reducer) -> dict:
        rest, in_llm = forward.split_in_llm(reducer)
        if in_llm is not None:
            raise OmniLabInputError(
                f"{in_llm!r} acts inside the LLM's forward; use it with run(), stream() or logits()"
            )
        return forward.resolve_reducers(rest, self.config)

    def _token_texts(self, ids) -> list[str]:
        return token_texts(self.tokenizer, ids)

    def _split_answer(self, tokens: list[int], thinking: bool) -> tuple[str, str | None]:
        return split_answer(self.tokenizer, tokens, thinking)


def split_answer(tokenizer, tokens: list[int], thinking: bool) -> tuple[str, str | None]:
    """(answer, reasoning) from generated ids: reasoning is what precedes `</think>`; special tokens dropped."""
    end_think = tokenizer.convert_tokens_to_ids("</think>")

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True).strip()

    if end_think is not None and end_think in tokens:
        cut = tokens.index(end_think)
        return decode(tokens[cut + 1 :]), decode(tokens[:cut])
    if thinking:  # reasoning never closed: everything so far is reasoning
        return "", decode(tokens)
    return decode(tokens), None
