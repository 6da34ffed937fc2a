"""Multi-turn prompts: a conversation rendered with the model's own chat template and processor.

`lab.chat(messages)` takes the messages in transformers' own chat format and returns the same `Prompt` that
`lab.prompt` returns, so `lab.run`, `lab.stream`, the reducers, the captures and the studies take it unchanged:

    messages = [
        {"role": "user", "content": [{"type": "image", "image": "square.png"}, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": [{"type": "video", "video": "clip.mp4"}, {"type": "text", "text": "Which way?"}]},
    ]
    run = lab.run(lab.chat(messages), max_new_tokens=16)
    messages += [{"role": "assistant", "content": run.answer}, {"role": "user", "content": "And the sound?"}]

A user message's media parts (`image`, `video`, `audio`: anything `lab.prompt` takes for one item) are decoded by
`omni_lab.media`, in the order they appear; the conversation goes through the processor's
`apply_chat_template(..., sanitize_control_tokens=True)`, the path `prompt.build_prompt` takes for one user turn, so
the release's template decides how past turns are written (its own handling of past reasoning included) and typed
control tokens stay text. The prompt's `images`, `videos` and `audios` hold every turn's media in prompt order, so
encoders and reducers see all of them; its token map gives each row its `turn` (0-based: the k-th user message and
the assistant reply after it; the system message is turn 0, the answer being generated belongs to the last turn).

A model trained on single questions only (a ShapesWorld twin, whose model card says so) refuses a conversation of
more than one user turn: its answers to a history would mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media, validate
from .errors import OmniLabInputError, OmniLabModelError
from .modalities import MEDIA
from .prompt import Prompt, _audio_seconds_that_fit, _lay_out, render_messages

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation as rendered.

    Attributes:
        role: "system", "user" or "assistant".
        parts: in order, `("text", str)` or `(modality, index)` with `index` into the prompt's `images`, `videos` or
            `audios` (media only in user messages).
    """

    role: str
    parts: tuple

    @property
    def text(self) -> str:
        """The message's text parts, joined."""
        return "".join(value for kind, value in self.parts if kind == "text")


def build_chat(
    processor,
    context_length: int,
    messages,
    *,
    thinking: bool = False,
    fps: float | None = 1.0,
    max_frames: int = 128,
    reference: str | None = None,
) -> Prompt:
    """Decode a conversation's media and render it with the model's processor; see `Lab.chat`."""
    thinking = validate.flag("thinking", thinking)
    fps = validate.number("fps", fps, low=0, low_open=True, allow_none=True, fix="pass frames per second, e.g. 1")
    max_frames = validate.number("max_frames", max_frames, low=1, high=media.LIMITS.max_frames, integer=True)
    audio_seconds = _audio_seconds_that_fit(processor, context_length)
    decoded: dict[str, list] = {modality: [] for modality in MEDIA}
    turns = []
    for number, (role, parts) in enumerate(_checked_messages(messages)):
        rendered = []
        for kind, value in parts:
            if kind == "text":
                rendered.append(("text", value))
                continue
            try:
                if kind == "image":
                    item = media.load_image(value)
                elif kind == "video":
                    item = media.load_video(value, fps=fps, max_frames=max_frames)
                else:
                    item = media.load_audio(value, max_seconds=audio_seconds)
            except OmniLabInputError as error:
                raise OmniLabInputError(f"messages[{number}] ({role}), its {kind}: {error}") from None
            rendered.append((kind, len(decoded[kind])))
            decoded[kind].append(item)
        turns.append(Turn(role, tuple(rendered)))
    return render(
        processor,
        context_length,
        tuple(turns),
        decoded["image"],
        decoded["video"],
        decoded["audio"],
        thinking=thinking,
        reference=reference,
    )


def render(
    processor,
    context_length: int,
    turns: tuple[Turn, ...],
    images: list,
    videos: list,
    audios: list,
    *,
    thinking: bool = False,
    reference: str | None = None,
) -> Prompt:
    """The `Prompt` of decoded turns: the processor's chat template over every message, the token map with each row's
    media item and turn.

    Args:
        processor: the model's processor.
        context_length: the LLM's context (a longer conversation is refused, with its token counts).
        turns: the messages (`Turn`), an optional system message first, then user and assistant in turn, a user last.
        images, videos, audios: the decoded media the turns' parts index (PIL images, `VideoClip`s, `AudioClip`s).
        thinking: open the answer with `<think>` (reasoning on) instead of `<think></think>`.
        reference: the expected answer, when known.
    Returns:
        `Prompt` with `turns` set; `text` is the last user message's text, `system` the system message's.
    """
    media_of = {"image": images, "video": videos, "audio": audios}
    messages = []
    for turn in turns:
        if turn.role != "user":
            messages.append({"role": turn.role, "content": turn.text})
            continue
        content = []
        for kind, value in turn.parts:
            if kind == "text":
                content.append({"type": "text", "text": value})
            elif kind == "image":
                content.append({"type": "image", "image": media_of["image"][value]})
            elif kind == "video":
                content.append({"type": "video", "video": media_of["video"][value].frames})
            else:
                content.append({"type": "audio", "audio": media_of["audio"][value].waveform})
        messages.append({"role": "user", "content": content})
    inputs = render_messages(processor, messages, videos, thinking, what="conversation")
    ids = inputs["input_ids"][0].numpy()
    token_map = _lay_out(
        processor, inputs, images, videos, audios, order=media_order(turns), turns=row_turns(processor, ids, turns)
    )
    if len(ids) > context_length:
        counts = ", ".join(f"{k} {v}" for k, v in token_map.counts().items())
        raise OmniLabInputError(
            f"the conversation is {len(ids)} tokens ({counts}), longer than the model's {context_length}-token "
            "context. Leave out earlier turns, or use fewer or smaller images, fewer video frames (fps=, max_frames=) "
            "or shorter audio."
        )
    users = [turn for turn in turns if turn.role == "user"]
    system = next((turn.text for turn in turns if turn.role == "system"), None)
    return Prompt(
        users[-1].text, system, bool(thinking), list(images), list(videos), list(audios), inputs, token_map, reference,
        tuple(turns),
    )  # fmt: skip


def media_order(turns) -> list[tuple[str, int]] | None:
    """`(modality, index)` of every media part in the order the conversation holds them (None for no turns: the
    single-turn order)."""
    if not turns:
        return None
    return [(kind, value) for turn in turns for kind, value in turn.parts if kind != "text"]


def row_turns(processor, ids: np.ndarray, turns) -> np.ndarray:
    """The turn of each row: every message opens with `<|im_start|>` (typed ones are sanitised into text), so the
    last `len(turns) + 1` of them open the messages and the answer's generation prompt; rows before the first
    message (a preamble the template adds) belong to turn 0.

    Raises:
        OmniLabModelError: the chat template opens fewer messages than the conversation has.
    """
    start_id = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
    starts = np.flatnonzero(ids == start_id)
    if len(starts) < len(turns) + 1:
        raise OmniLabModelError(
            f"this model's chat template opened {len(starts)} messages with <|im_start|> for a conversation of "
            f"{len(turns)} messages and the answer: omni-lab cannot tell its turns apart"
        )
    numbers, user = [], -1
    for turn in turns:
        user += turn.role == "user"
        numbers.append(max(user, 0))  # a system message (before the first user message) is turn 0
    numbers.append(user)  # the generation prompt: the answer to the last user message
    out = np.zeros(len(ids), dtype=np.int64)
    for start, number in zip(starts[-len(numbers) :], numbers, strict=True):
        out[start:] = number
    return out


def _checked_messages(messages) -> list[tuple[str, tuple]]:
    """[(role, ((kind, value), ...))] of transformers-style messages, checked: a list of {"role", "content"} dicts,
    an optional system message first, then user and assistant in turn, ending with a user message; media parts only
    in user messages, each carrying its value under its type's name (or "path")."""
    if isinstance(messages, dict) or not isinstance(messages, (list, tuple)) or not messages:
        raise OmniLabInputError(
            'messages must be a non-empty list of {"role": ..., "content": ...} dicts, e.g. '
            '[{"role": "user", "content": [{"type": "image", "image": "cat.png"}, {"type": "text", "text": "What?"}]}]'
        )
    checked = []
    for number, message in enumerate(messages):
        where = f"messages[{number}]"
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise OmniLabInputError(f'{where} must be a dict with "role" and "content", got {message!r:.80}')
        role = message["role"]
        if role not in ROLES:
            raise OmniLabInputError(f"{where} has role {role!r}; use one of {', '.join(ROLES)}")
        expected = ("system", "user") if number == 0 else ("user",) if checked[-1][0] != "user" else ("assistant",)
        if role not in expected:
            raise OmniLabInputError(
                f"{where} is a {role} message where a {' or '.join(expected)} message belongs: a conversation is an "
                "optional system message, then user and assistant messages in turn"
            )
        parts = _parts(where, role, message["content"])
        if role == "user" and not any(kind != "text" or value.strip() for kind, value in parts):
            raise OmniLabInputError(f"{where} is empty: give some text, or an image, video or audio clip")
        checked.append((role, parts))
    if checked[-1][0] != "user":
        raise OmniLabInputError(
            f"the last message is a {checked[-1][0]} message: end with the user message the model should answer"
        )
    return checked


def _parts(where: str, role: str, content) -> tuple:
    if isinstance(content, str):
        return (("text", validate.text(f"{where} content", content)),)
    if not isinstance(content, (list, tuple)):
        raise OmniLabInputError(f"{where} content must be a string or a list of parts, got {type(content).__name__}")
    parts = []
    for index, part in enumerate(content):
        name = f"{where} content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", *MEDIA):
            raise OmniLabInputError(
                f'{name} must be a dict with "type" text, image, video or audio, e.g. {{"type": "text", "text": "..."}}'
            )
        if kind != "text" and role != "user":
            raise OmniLabInputError(f"{name}: a {role} message holds text only; attach the {kind} to a user message")
        value = part.get(kind, part.get("path"))
        if value is None:
            raise OmniLabInputError(f'{name} carries no {kind}: give it as {{"type": "{kind}", "{kind}": ...}}')
        parts.append((kind, validate.text(name, value) if kind == "text" else value))
    return tuple(parts)


def single_turn_reason(source) -> str | None:
    """Why a model takes one question at a time, or None: a ShapesWorld twin (its model card names ShapesWorld) was
    trained on single questions, so its answers to a conversation's history would mean nothing."""
    path = getattr(source, "path", None)
    card = Path(path) / "README.md" if path is not None else None
    if card is not None and card.is_file() and "ShapesWorld" in card.read_text(errors="ignore")[:2000]:
        return (
            f"{source.spec} was trained on single ShapesWorld questions, not conversations: ask each question on its "
            "own with lab.prompt(...) (the playground's Chat tab does so for the twin)"
        )
    return None
