"""Lab: load Nemotron 3 Nano Omni from any source, build prompts, run them; Run: what one run produced.

lab = ol.load("random:small")
p = lab.prompt("Which way does the square move?", video="clip.mp4", audio="beeps.wav")
run = lab.run(p, max_new_tokens=32)
run.answer, run.token_map.df, run.timings
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from . import forward
from .capture import budget as capture_budget
from .capture import specs as capture_specs
from .capture.hooks import hook_points
from .capture.session import CaptureSession
from .errors import OmniLabInputError, OmniLabModelError
from .presets import RELEASED_PARAMETER_COUNT
from .prompt import Prompt, build_prompt, token_texts
from .reduction.ledger import build_ledger
from .sources import Source, build_model, resolve
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
    resolved = resolve(source, allow_download=allow_download)
    model, processor, dtype = build_model(resolved, str(device), dtype, seed=seed, progress=progress)
    return Lab(model, processor, resolved, str(device), dtype)


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
    routing: object = None
    attention_mass: object = None
    mamba_mass: object = None
    residual: object = None
    cache: dict = field(default_factory=dict)
    interventions: list = field(default_factory=list)
    ledger: object = None

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
        kinds = {"M": "llm.mamba", "E": "llm.moe", "*": "llm.attention", "-": "llm.mlp"}
        counts: dict[str, int] = {
            "llm.embeddings": language.model.embeddings.weight.numel(),
            "llm.lm_head": language.lm_head.weight.numel(),
        }
        norms = language.model.norm_f.weight.numel()
        for layer, kind in zip(language.model.layers, self.layer_pattern, strict=True):
            norms += layer.norm.weight.numel()
            key = kinds[kind]
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
        return {
            "source": self.source.spec,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "layer_pattern": self.layer_pattern,
            "layers": {
                "total": len(self.layer_pattern),
                "mamba": self.layer_pattern.count("M"),
                "moe": self.layer_pattern.count("E"),
                "attention": self.layer_pattern.count("*"),
            },
            "attention_layers": [i for i, kind in enumerate(self.layer_pattern) if kind == "*"],
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

    def _as_prompt(self, prompt) -> Prompt:
        if isinstance(prompt, Prompt):
            return prompt
        if isinstance(prompt, str):
            return self.prompt(prompt)
        raise OmniLabInputError(f"run() takes a Prompt (from lab.prompt(...)) or a string, got {type(prompt).__name__}")

    @torch.inference_mode()
    def encode(self, prompt) -> forward.EncodedMedia:
        """Run the model's media encoders and projectors once; pass the result to `run(..., encoded=...)` to reuse it
        across runs of the same prompt (studies do)."""
        self._check_runnable()
        prompt = self._as_prompt(prompt)
        encoded = forward.encode_media(self.model, prompt)
        encoded.prompt_id = id(prompt)
        return encoded

    def _reduced_sequence(
        self,
        prompt: Prompt,
        reducer,
        timings: dict,
        session: CaptureSession | None = None,
        encoded: forward.EncodedMedia | None = None,
    ):
        device = self.model.get_input_embeddings().weight.device
        reducers = forward.resolve_reducers(reducer, self.config)
        if encoded is not None and getattr(encoded, "prompt_id", id(prompt)) != id(prompt):
            raise OmniLabInputError("encoded= holds the media of another prompt; encode this prompt with lab.encode")
        with forward.timed(timings, "encode_s", device):
            if encoded is None or (session is not None and session.needs_encoders):
                encoded = forward.encode_media(self.model, prompt)
            embeds = forward.merge_embeddings(self.model, prompt, encoded)
        with forward.timed(timings, "reduce_s", device):
            on_reduced = session.on_reduced if session is not None and session.active else None
            reduced = forward.apply_reducers(embeds, prompt, encoded, reducers, on_reduced=on_reduced)
        return reduced, reducers

    def _session(self, prompt, capture, cache, interventions, cache_device, cache_dtype, max_new_tokens, budget):
        specs = capture_specs.normalise(capture)
        session = CaptureSession(self, prompt, specs, cache, interventions, cache_device, cache_dtype)
        if specs or session.cache_names:
            parts = capture_budget.estimate(self, prompt, max_new_tokens, specs, session.cache_names, cache_dtype)
            capture_budget.check(parts, budget)
        return session

    @torch.inference_mode()
    def logits(self, prompt, reducer="model", interventions=None, encoded=None) -> torch.Tensor:
        """`(1, L', vocab)` float32 logits at every position of the (reduced) prompt from the merged forward."""
        self._check_runnable()
        prompt = self._as_prompt(prompt)
        session = self._session(prompt, None, None, interventions, "cpu", None, 0, None)
        reducer, in_llm = forward.split_in_llm(reducer)
        with session.installed():
            reduced, _ = self._reduced_sequence(prompt, reducer, {}, session, encoded)
            prompt_map = prompt.token_map.with_reduction(reduced.keep, reduced.scores, reduced.merged_into)
            session.set_token_map(prompt_map)
            with forward.in_llm_reduction(in_llm, self.model, prompt_map):
                return self.model.language_model(inputs_embeds=reduced.embeds).logits.float()

    @torch.inference_mode()
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
            `Run`.
        """
        self._check_runnable()
        prompt = self._as_prompt(prompt)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise OmniLabInputError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        settings = forward.SamplingSettings(do_sample, temperature, top_k, top_p, seed)
        settings.validate()
        reducer, in_llm = forward.split_in_llm(reducer)
        session = self._session(
            prompt, capture, cache, interventions, cache_device, cache_dtype, max_new_tokens, capture_budget
        )
        if in_llm is not None and (
            session.captures or any(name.startswith("llm.") for name in [*session.cache_names, *session.patches])
        ):
            raise OmniLabInputError(
                f"{in_llm!r} shortens the sequence inside the LLM, and captures / LLM interventions index the full "
                "sequence's positions: run them without the in-LLM reducer"
            )
        timings: dict = {}
        started = time.perf_counter()
        with session.installed():
            reduced, reducers = self._reduced_sequence(prompt, reducer, timings, session, encoded)
            prompt_map = prompt.token_map.with_reduction(reduced.keep, reduced.scores, reduced.merged_into)
            session.set_token_map(prompt_map)
            length = reduced.embeds.shape[1]
            if length + max_new_tokens > self.context_length:
                raise OmniLabInputError(
                    f"{length} prompt tokens + max_new_tokens={max_new_tokens} exceed the {self.context_length}-token "
                    f"context; lower max_new_tokens or shorten the prompt"
                )
            with forward.in_llm_reduction(in_llm, self.model, prompt_map) as dropped:
                tokens, logits, reason = forward.generate(
                    self.model.language_model,
                    reduced.embeds,
                    max_new_tokens,
                    self.eos_token_ids,
                    settings,
                    timings,
                    keep_logits=return_logits,
                )
        if in_llm is not None:
            prompt_map = prompt_map.with_llm_drop(in_llm.layer, dropped["keep"], dropped["scores"])
            reducers = {**reducers, "llm": in_llm}
        token_map = prompt_map.with_generated(tokens, self._token_texts(tokens))
        results = session.finish(token_map)
        timings["total_s"] = time.perf_counter() - started
        kept_ids = prompt.input_ids[0][torch.from_numpy(reduced.keep)]
        answer, reasoning = self._split_answer(tokens, prompt.thinking)
        return Run(
            prompt=prompt,
            answer=answer,
            reasoning=reasoning,
            token_ids=torch.cat([kept_ids, torch.tensor(tokens, dtype=kept_ids.dtype)]),
            generated_ids=tokens,
            token_map=token_map,
            timings=timings,
            logits=logits,
            stop_reason=reason,
            reducers=reducers,
            routing=results.get("routing"),
            attention_mass=results.get("attention_mass"),
            mamba_mass=results.get("mamba_mass"),
            residual=results.get("residual"),
            cache=results["cache"],
            interventions=list(interventions or []),
            ledger=build_ledger(prompt, reducers, token_map, self.processor),
        )

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
