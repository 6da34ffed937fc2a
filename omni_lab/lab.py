"""Lab: load Nemotron 3 Nano Omni from any source, build prompts, run them.

lab = ol.load("random:small")
p = lab.prompt("Which way does the square move?", video="clip.mp4", audio="beeps.wav")
run = lab.run(p, max_new_tokens=32)
run.answer, run.token_map.df, run.timings

The entry points differ in what goes in (a prompt or embeddings) and whether autograd is on:

    run(prompt) / stream(prompt)          prompt in, generation, captures          no grad
    prefill(prompts)                      prompts in (a batch), logits + captures   no grad
    logits(prompt or prompts)             prompt(s) in, logits of every position    no grad
    prepare(prompt, grad=False|True)      prompt in, the embeddings the LLM sees    either
    logits_from_embeds(embeds, token_map) embeddings in, logits                     grad (attribution)
    grad(prompt, target)                  prompt in, a target backpropagated        grad, with captures

`Run` lives in run.py, `RunOptions` (the options of run, stream and the studies) in options.py, the release's
parameter accounting in accounting.py.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time

import torch

from . import forward, validate
from .accounting import architecture_summary, parameter_counts
from .capture import budget as capture_budget_module
from .capture.hooks import hook_points
from .capture.session import BatchSession, CaptureSession
from .errors import OmniLabInputError, OmniLabModelError
from .logs import quiet_expected_warnings
from .options import RunOptions, per_row, per_row_interventions
from .prompt import Prompt, build_prompt, token_texts
from .reduction.ledger import build_ledger
from .run import Captures, Gradients, Prefill, Run, StreamToken, split_answer
from .sources import Source, build_model, check_device, resolve
from .token_map import TokenMap

__all__ = ["Lab", "Run", "RunOptions", "StreamToken", "load", "split_answer"]


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
        """Parameters per component, and what a checkpoint stores (`accounting.parameter_counts`)."""
        return parameter_counts(self.model)

    def info(self) -> dict:
        """Source, device, dtype, then the architecture summary: layer pattern, parameter counts, token budgets
        (`accounting.architecture_summary`)."""
        return {
            "source": self.source.spec,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            **architecture_summary(self.model, self.processor),
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
        video_audio: bool = False,
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
            video_audio: also give the model the video file's own sound track, as the release's serving stacks do
                (vLLM's `use_audio_in_video`): one audio clip right after the video, before any `audio=` clips,
                trimmed to the video's span, its token-map seconds on the video's clock (a track that starts late
                starts late there too). Needs one video file with an audio stream (`media.load_video_audio`).
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
            video_audio=video_audio,
        )

    def chat(
        self,
        messages,
        thinking: bool = False,
        *,
        fps: float | None = 1.0,
        max_frames: int = 128,
        reference: str | None = None,
    ) -> Prompt:
        """Build a prompt of several turns with the model's own chat template and processor (`conversation.py`).

            p = lab.chat([
                {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Colour?"}]},
                {"role": "assistant", "content": "red"},
                {"role": "user", "content": [{"type": "audio", "audio": "beeps.wav"}, {"type": "text", "text": "How many?"}]},
            ])

        Args:
            messages: transformers' chat format: an optional {"role": "system", "content": str} first, then user and
                assistant messages in turn, a user message last. Content is a string or a list of parts
                {"type": "text", "text": ...}, {"type": "image", "image": ...}, {"type": "video", "video": ...},
                {"type": "audio", "audio": ...} (one item each, anything `prompt` takes; media in user messages only),
                kept in the order given. Assistant messages are past answers (`run.answer`).
            thinking: open the answer with `<think>` (reasoning on) instead of `<think></think>`.
            fps, max_frames: frame sampling for video files.
            reference: the expected answer to the last message, when known.
        Returns:
            `Prompt` like `prompt`'s: every turn's media in `images` / `videos` / `audios` (reducers act on them
            all), `turns` set, the token map's `turn` column giving each row's turn; `text` is the last question.
        Raises:
            OmniLabInputError: malformed messages (named by index), bad media, too long for the context; more than one
                user turn for a model trained on single questions (a ShapesWorld twin).
        """
        from .conversation import build_chat, single_turn_reason

        reason = single_turn_reason(self.source)
        users = (
            sum(isinstance(m, dict) and m.get("role") == "user" for m in messages) if isinstance(messages, list) else 0
        )
        if reason is not None and users > 1:
            raise OmniLabInputError(f"a conversation of {users} user turns: {reason}")
        return build_chat(
            self.processor,
            self.context_length,
            messages,
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

    def prepare(
        self, prompt, reducer="model", encoded: forward.EncodedMedia | None = None, *, grad: bool = False
    ) -> forward.Prepared:
        """Everything before the LLM, without running it: the merged, reduced embeddings and the reduced token map.

        With `encoded=lab.encode(prompt)` only the merge and the reducers run (what a widget's rate slider needs).
        With an in-LLM reducer (FastV, PyramidDrop, SparseVLM) the LLM's prefill runs too, to find which positions
        leave after which layer (`token_map.dropped_at_layer`); `embeds` stay the LLM's input. With a reducer that
        rewrites the media (`Downsample`) the encoders run on the rewritten prompt (`prepared.prompt`), and
        `encoded` is not used.

        Args:
            grad: keep autograd on (the gradient path attribution uses): `prepared.embeds` `(1, L', D)` is then part
                of an autograd graph (through the encoders and projectors when `encoded` is None), so
                `torch.autograd.grad(f(lab.logits_from_embeds(prepared.embeds, ...)), prepared.embeds)` works;
                detach it and `requires_grad_()` for a leaf.
        """
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        rest, in_llm = forward.split_in_llm(reducer)
        reducers = forward.resolve_reducers(rest, self.config)
        grad = validate.flag("grad", grad)
        run_prompt = forward.rewrite_media(prompt, reducers, self.processor, self.context_length)
        if run_prompt is not prompt:
            encoded = None  # the encoders see other media
        if in_llm is not None:
            if grad:
                raise OmniLabInputError(f"{in_llm!r} acts inside the LLM's forward; prepare(grad=True) stops before it")
            return self._prepare_in_llm(run_prompt, reducers, in_llm, encoded)
        with self._lock, torch.enable_grad() if grad else torch.inference_mode():
            return forward.prepare(self.model, run_prompt, reducers, encoded)

    @torch.inference_mode()
    def _prepare_in_llm(self, prompt, reducers, in_llm, encoded) -> forward.Prepared:
        """`prepare` with an in-LLM reducer: the prefill runs to find its drops, which the token map then records."""
        session = CaptureSession(self.model, prompt, {}, in_llm=in_llm)
        with self._lock, session.installed():
            prepared = forward.prepare(self.model, prompt, reducers, encoded, session)
            session.set_token_map(prepared.token_map)
            self.model.language_model(inputs_embeds=prepared.embeds, logits_to_keep=1)
        token_map = forward.with_llm_drops(prepared.token_map, session.llm_drop)
        return dataclasses.replace(prepared, token_map=token_map, reducers={**prepared.reducers, "llm": in_llm})

    def logits_from_embeds(
        self, embeds: torch.Tensor, token_map, *, interventions=None, logits_to_keep: int = 0, lengths=None
    ) -> torch.Tensor:
        """The language model on given input embeddings, autograd on: `(B, L, vocab)` float32 logits (float64 for a
        float64 model).

        Args:
            embeds: `(B, L, D)` (or `(L, D)`); each row laid out like its token map's kept positions (extra positions
                after them count as generated tokens, e.g. a teacher-forced answer), padded on the right to L.
            token_map: the reduced token map the embeddings follow (`prepared.token_map`), or one per row;
                interventions select positions through it.
            interventions: `ol.ablate_tokens(...)`, `ol.ablate_experts(...)`, ... honoured as in `run`, on every row;
                or a list with one list of interventions per row.
            logits_to_keep: return logits of each row's last this many positions only (0: all). A 35K-token
                prompt's logits over the real vocabulary are ~18 GB in float32; a teacher-forced answer needs a
                handful.
            lengths: each row's length when the rows differ (the rest is padding, masked and never seen by the row:
                NaN in the logits); default every row is L long.
        Returns:
            `(B, L or logits_to_keep, vocab)` logits; each row equals a forward of that row alone.
        """
        self._check_runnable()
        if not isinstance(embeds, torch.Tensor) or embeds.dim() not in (2, 3):
            raise OmniLabInputError(
                "logits_from_embeds takes embeddings of shape (B, L, D) or (L, D), e.g. prepared.embeds"
            )
        if embeds.dim() == 2:
            embeds = embeds[None]
        batch, padded, width = embeds.shape
        hidden = self.config.text_config.hidden_size
        if width != hidden:
            raise OmniLabInputError(f"embeddings have width {width}; this model's LLM takes {hidden}")
        if isinstance(logits_to_keep, bool) or not isinstance(logits_to_keep, int) or logits_to_keep < 0:
            raise OmniLabInputError(f"logits_to_keep must be an int >= 0 (0 keeps all), got {logits_to_keep!r}")
        token_maps = per_row("token_map", token_map, batch, TokenMap)
        if any(not isinstance(entry, TokenMap) for entry in token_maps):
            raise OmniLabInputError("logits_from_embeds needs the token map the embeddings follow (prepared.token_map)")
        lengths = [padded] * batch if lengths is None else [int(length) for length in lengths]
        if len(lengths) != batch or not all(0 < length <= padded for length in lengths):
            raise OmniLabInputError(f"lengths={lengths!r}: give one length in 1..{padded} per row ({batch} rows)")
        if logits_to_keep > min(lengths):
            raise OmniLabInputError(f"logits_to_keep={logits_to_keep} is longer than the shortest row ({min(lengths)})")
        sessions = [
            CaptureSession(self.model, None, {}, interventions=self._expand(row_interventions))
            for row_interventions in per_row_interventions(interventions, batch)
        ]
        for session, row_map in zip(sessions, token_maps, strict=True):
            session.set_token_map(row_map)
        hooks = sessions[0] if batch == 1 else BatchSession(sessions, lengths)
        parameter = self.model.get_input_embeddings().weight
        mask = None if len(set(lengths)) == 1 else forward.padding_mask(lengths, padded, parameter.device)
        with self._lock, torch.enable_grad(), hooks.installed():
            language = self.model.language_model
            # transformers' causal-LM forward is backbone -> lm_head -> .float(); the head is applied here so that a
            # float64 model keeps float64 logits (finite-difference checks need them).
            states = language.model(
                inputs_embeds=embeds.to(parameter.device, parameter.dtype), attention_mask=mask
            ).last_hidden_state
            if logits_to_keep:
                states = torch.stack(
                    [states[row, length - logits_to_keep : length] for row, length in enumerate(lengths)]
                )
            logits = language.lm_head(states)
            logits = logits if logits.dtype == torch.float64 else logits.float()
            if mask is not None and not logits_to_keep:
                logits = logits.masked_fill(~mask.bool()[..., None], float("nan"))
            return logits

    def grad(
        self, prompt, target=None, *, capture=None, reducer="model", interventions=None, encoded=None
    ) -> Gradients:
        """Backpropagate a target through the LLM (and the encoders when `encoded` is None), recording captures on
        the way: "grad:<hook pattern>" captures hold the gradient of the target with respect to those activations.

            result = lab.grad(p, "left", capture=["grad:llm.layers.*.out", "routing"])
            result.value, result.captures["grad:llm.layers.*.out"]["llm.layers.3.attn.out"]

        Args:
            prompt: a `Prompt` or a string.
            target: what to differentiate (`ol.Target`, an answer string or ids, or None for the model's own
                answer): the answer's teacher-forced log-probability, or with `tokens="first"` its first token's,
                minus an alternative's for a contrast. A contrast over all tokens needs two forwards: give
                `tokens="first"`.
            capture, reducer, interventions, encoded: as in `run` (captures see one forward: the prompt and the
                answer tokens fed after it).
        Returns:
            `Gradients`.
        """
        from .targets import answer_log_prob, resolve_target

        self._check_runnable()
        prompt = self.as_prompt(prompt)
        resolved = resolve_target(self, prompt, target, reducer)
        if resolved.alternative_ids is not None and resolved.tokens == "all":
            raise OmniLabInputError(
                "lab.grad differentiates one forward: a contrast over all answer tokens needs two; give "
                "Target(answer, alternative=..., tokens='first') or no alternative"
            )
        prepared = self.prepare(prompt, reducer, encoded, grad=True)
        answer = torch.tensor(resolved.answer_ids)
        fed = answer[:-1]  # the last answer token is predicted, never fed
        embedding = self.model.get_input_embeddings()
        with torch.enable_grad():
            sequence = torch.cat([prepared.embeds, embedding(fed[None].to(embedding.weight.device))], dim=1)
        token_map = prepared.token_map.with_generated(fed.tolist(), self._token_texts(fed.tolist()))
        session = CaptureSession(
            self.model, prompt, capture, interventions=self._expand(interventions, reducer), tokenizer=self.tokenizer
        )
        with self._lock, torch.enable_grad(), session.installed():
            session.set_token_map(prepared.token_map)
            logits = self.model.language_model(inputs_embeds=sequence).logits
            length = len(prepared)
            value = answer_log_prob(logits, length, answer)[0]
            if resolved.alternative_ids is not None:  # first-token contrast: the same position predicts both
                value = value - answer_log_prob(logits, length, torch.tensor(resolved.alternative_ids))[0]
            value.backward()
        self.model.zero_grad(set_to_none=True)
        results = session.finish(token_map)
        return Gradients(float(value.detach()), resolved, token_map, Captures(results.captures), prompt)

    def logits(self, prompt, reducer="model", interventions=None, encoded=None) -> torch.Tensor:
        """Float32 logits at every position of the (reduced) prompt from the merged forward: `(1, L', vocab)`.

        Given a list of prompts, `(B, L'max, vocab)`: one forward over the batch (`prefill`), each row equal to its
        prompt alone and NaN past its length; `reducer`, `interventions` and `encoded` are then one for every row or
        a list with one per row.
        """
        if isinstance(prompt, (list, tuple)):
            rows = self.prefill(prompt, reducer=reducer, interventions=interventions, encoded=encoded)
            padded = max(len(row.logits) for row in rows)
            out = torch.full((len(rows), padded, rows[0].logits.shape[-1]), float("nan"))
            for index, row in enumerate(rows):
                out[index, : len(row.logits)] = row.logits
            return out
        self._check_runnable()
        prompt = self.as_prompt(prompt)
        reducer, in_llm = forward.split_in_llm(reducer)
        reducers = forward.resolve_reducers(reducer, self.config)
        run_prompt = forward.rewrite_media(prompt, reducers, self.processor, self.context_length)
        encoded = None if run_prompt is not prompt else encoded
        session = CaptureSession(
            self.model, run_prompt, {}, interventions=self._expand(interventions, reducer), in_llm=in_llm
        )
        session.refuse_with_in_llm()
        with self._lock, torch.inference_mode(), session.installed():
            prepared = forward.prepare(self.model, run_prompt, reducers, encoded, session)
            session.set_token_map(prepared.token_map)
            return self.model.language_model(inputs_embeds=prepared.embeds).logits.float()

    def prefill(
        self,
        prompts,
        *,
        reducer="model",
        interventions=None,
        capture=None,
        cache=None,
        encoded=None,
        cache_device="cpu",
        cache_dtype=None,
        capture_budget: int | None = None,
        batch_size: int | None = None,
    ) -> list[Prefill]:
        """The LLM's forward over many prompts at once, padded on the right: one `Prefill` per prompt (its logits at
        every position it fed the LLM, its captures and cached activations), each equal to that prompt alone.

        Args:
            prompts: a list of `Prompt`s or strings (one prompt is a list of one).
            reducer, interventions, encoded: one value for every row, or a list with one per row (interventions: a
                list of lists). In-LLM reducers (FastV) shorten rows mid-forward and are refused here.
            capture, cache, cache_device, cache_dtype, capture_budget: as in `run`, for every row (the budget over
                all rows together).
            batch_size: rows per forward (default all).
        Returns:
            list of `Prefill`, in the prompts' order.
        """
        self._check_runnable()
        prompts = [self.as_prompt(prompt) for prompt in (prompts if isinstance(prompts, (list, tuple)) else [prompts])]
        if not prompts:
            raise OmniLabInputError("prefill needs at least one prompt")
        batch = len(prompts)
        batch_size = batch if batch_size is None else validate.number("batch_size", batch_size, low=1, integer=True)
        reducers = per_row("reducer", reducer, batch, None)
        encoded = per_row("encoded", encoded, batch, forward.EncodedMedia)
        rows = []
        for prompt, row_reducer, row_interventions in zip(
            prompts, reducers, per_row_interventions(interventions, batch), strict=True
        ):
            rest, in_llm = forward.split_in_llm(row_reducer)
            if in_llm is not None:
                raise OmniLabInputError(f"{in_llm!r} shortens the sequence inside the LLM; use run() or logits()")
            row_reducers = forward.resolve_reducers(rest, self.config)
            prompt = forward.rewrite_media(prompt, row_reducers, self.processor, self.context_length)
            session = CaptureSession(
                self.model,
                prompt,
                capture,
                cache=cache,
                interventions=self._expand(row_interventions, rest),
                cache_device=cache_device,
                cache_dtype=cache_dtype,
                tokenizer=self.tokenizer,
            )
            rows.append((prompt, row_reducers, session))
        parts = [part for _, _, session in rows for part in session.estimate_bytes(0).items()]
        if capture or cache:
            capture_budget_module.check(dict(enumerate(size for _, size in parts)), capture_budget)
        out: list[Prefill] = []
        for start in range(0, batch, batch_size):
            row_encoded = [
                None if value is not None and not value.belongs_to(row[0]) else value
                for row, value in zip(rows, encoded, strict=True)
            ]  # a rewritten (downsampled) row encodes its own media
            chunk = list(zip(rows[start : start + batch_size], row_encoded[start : start + batch_size], strict=True))
            out += self._prefill_chunk(chunk)
        return out

    @torch.inference_mode()
    def _prefill_chunk(self, chunk) -> list[Prefill]:
        with self._lock:
            prepared = []
            for (prompt, reducers, session), row_encoded in chunk:
                with session.installed():
                    row = forward.prepare(self.model, prompt, reducers, row_encoded, session)
                session.set_token_map(row.token_map)
                prepared.append(row)
            sessions = [session for (_, _, session), _ in chunk]
            lengths = [len(row) for row in prepared]
            embeds, mask = forward.pad(prepared)
            started = time.perf_counter()
            with BatchSession(sessions, lengths).installed():
                logits = self.model.language_model(inputs_embeds=embeds, attention_mask=mask).logits.float()
            seconds = time.perf_counter() - started
            out = []
            for index, (row, session) in enumerate(zip(prepared, sessions, strict=True)):
                results = session.finish(row.token_map)
                out.append(
                    Prefill(
                        prompt=row.prompt,
                        token_map=row.token_map,
                        logits=logits[index, : lengths[index]].cpu(),
                        captures=Captures(results.captures),
                        cache=results.cache,
                        reducers=dict(row.reducers),
                        timings={**row.timings, "prefill_s": seconds, "batch_rows": len(prepared)},
                    )
                )
            return out

    def run(
        self, prompt, options: RunOptions | None = None, /, *, encoded: forward.EncodedMedia | None = None, **changes
    ) -> Run:
        """Run a prompt: encode media, merge, reduce, prefill, decode.

        Args:
            prompt: a `Prompt`, or a string for a text-only prompt.
            options: an `ol.RunOptions`; the options may also (or instead) be given by name, e.g.
                `run(p, max_new_tokens=16, reducer=None, capture=["routing"])`: max_new_tokens, do_sample,
                temperature, top_k, top_p, seed, reducer, return_logits, capture, cache, interventions, cache_device,
                cache_dtype, capture_budget (see `RunOptions`).
            encoded: this prompt's media from `lab.encode(prompt)`, to skip the encoders (timings then show
                encode_s for the merge only).
        Returns:
            `Run`. The same as the last item `stream` yields for the same arguments.
        """
        *_, run = self.stream(prompt, options, encoded=encoded, **changes)
        return run

    def stream(
        self, prompt, options: RunOptions | None = None, /, *, encoded: forward.EncodedMedia | None = None, **changes
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
        options = RunOptions.of(options, **changes)
        validate.number("max_new_tokens", options.max_new_tokens, low=0, high=self.context_length, integer=True)
        reducer, in_llm = forward.split_in_llm(options.reducer)
        reducers = forward.resolve_reducers(reducer, self.config)
        run_prompt = forward.rewrite_media(prompt, reducers, self.processor, self.context_length)
        if run_prompt is not prompt:
            encoded = None  # the encoders see the rewritten (downsampled) media
        session = CaptureSession(
            self.model,
            run_prompt,
            options.capture,
            cache=options.cache,
            interventions=self._expand(options.interventions, reducer),
            cache_device=options.cache_device,
            cache_dtype=options.cache_dtype,
            in_llm=in_llm,
            tokenizer=self.tokenizer,
        )
        session.refuse_with_in_llm()
        gradient = [name for name in session.captures if name.startswith("grad:")]
        if gradient:
            raise OmniLabInputError(
                f"capture {gradient[0]!r} records gradients, and a run has no target: use "
                "lab.grad(prompt, target, capture=[...])"
            )
        if session.captures or session.cache_names:
            capture_budget_module.check(session.estimate_bytes(options.max_new_tokens), options.capture_budget)
        return self._stream(run_prompt, options, reducers, in_llm, session, encoded, asked=prompt)

    @torch.inference_mode()
    def _stream(self, prompt, options: RunOptions, reducers, in_llm, session, encoded, asked=None):
        asked = prompt if asked is None else asked  # the prompt as asked; `prompt` is what the encoders see
        tokens: list[int] = []
        logits: list[torch.Tensor] = []
        stop_reason = "max_new_tokens"
        with self._lock:
            started = time.perf_counter()
            with session.installed():
                prepared = forward.prepare(self.model, prompt, reducers, encoded, session)
                session.set_token_map(prepared.token_map)
                timings = {**prepared.timings, "prefill_s": 0.0, "decode_s": 0.0}
                length = len(prepared)
                if length + options.max_new_tokens > self.context_length:
                    raise OmniLabInputError(
                        f"{length} prompt tokens + max_new_tokens={options.max_new_tokens} exceed the "
                        f"{self.context_length}-token context; lower max_new_tokens or shorten the prompt"
                    )
                steps = forward.decode(
                    self.model.language_model,
                    prepared.embeds,
                    options.max_new_tokens,
                    self.eos_token_ids,
                    options,
                    keep_logits=options.return_logits,
                    **self._thinking_budget(prompt, options),
                )
                text_so_far = ""
                for step in steps:
                    timings["prefill_s"] += step.prefill_s
                    timings["decode_s"] += step.decode_s
                    stop_reason = step.stop or stop_reason
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
            stages = results.llm_drop
            if stages is not None:
                token_map = forward.with_llm_drops(token_map, stages)
                reducers["llm"] = in_llm
                stages = stages if isinstance(stages, (tuple, list)) else (stages,)
                timings["llm_reduce_s"] = float(sum(getattr(stage, "seconds", 0.0) for stage in stages))
            timings["total_s"] = time.perf_counter() - started
        answer, reasoning = split_answer(self.tokenizer, tokens, prompt.thinking)
        yield Run(
            prompt=asked,
            answer=answer,
            reasoning=reasoning,
            token_ids=torch.cat([prepared.input_ids[0], torch.tensor(tokens, dtype=prepared.input_ids.dtype)]),
            generated_ids=tokens,
            token_map=token_map,
            timings=timings,
            logits=torch.stack(logits) if logits else None,
            stop_reason=stop_reason,
            reducers=reducers,
            captures=Captures(results.captures),
            cache=results.cache,
            interventions=list(options.interventions or []),
            build_ledger=functools.partial(
                build_ledger, asked, reducers, token_map, self.processor, config=self.config, llm_stages=stages
            ),
            options=options,
        )

    def _thinking_budget(self, prompt, options: RunOptions) -> dict:
        """`forward.decode`'s reasoning budget for this run: none unless the prompt thinks and a budget was given."""
        if options.thinking_budget is None or not prompt.thinking:
            return {}
        think_end = self.tokenizer.convert_tokens_to_ids("</think>")
        if think_end is None or think_end == self.tokenizer.unk_token_id:
            raise OmniLabModelError(f"{self.source.spec}'s tokenizer has no </think> token: it cannot close reasoning")
        return {"thinking_budget": options.thinking_budget, "think_end_id": int(think_end)}

    def _expand(self, interventions, reducer="model") -> list | None:
        """The interventions with each `ol.patch_from(...)` turned into its patches (its source run here, with
        `reducer`, if it is a prompt)."""
        from .capture.patching import PatchFrom

        if not interventions:
            return interventions
        if not isinstance(interventions, (list, tuple)):
            raise OmniLabInputError(f"interventions={interventions!r}: pass a list, e.g. [ol.ablate_tokens(...)]")
        expanded = []
        for intervention in interventions:
            expanded += (
                intervention.interventions(self, reducer) if isinstance(intervention, PatchFrom) else [intervention]
            )
        return expanded

    def _token_texts(self, ids) -> list[str]:
        return token_texts(self.tokenizer, ids)
