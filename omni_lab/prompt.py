"""Multimodal prompts: the model's own chat template and processor, with user text kept as text.

`build_prompt` decodes the media (media.py), writes one user turn whose content lists the images, the videos, the
audio clips and then the text (the order the released processor uses; with `video_audio=True` the video file's own
sound track is the first clip, one audio block right after the video's, as vLLM's `use_audio_in_video` places it),
and hands it to the processor's
`apply_chat_template(..., sanitize_control_tokens=True)`. That transformers mechanism encodes any control token the
user typed ("<image>", "<so_embedding>", "<|im_end|>") as plain text, so typed text never becomes a placeholder or
ends a turn. The processor expands each media placeholder (`<img>` + `<image>`xN + `</img>` per image and per video
tubelet with its "Frame i sampled at t seconds" label, `<so_start>` + `<so_embedding>`xN + `<so_end>` per clip), and
the result is laid out as a `TokenMap`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import media, validate
from .errors import OmniLabInputError
from .token_map import AudioLayout, ImageLayout, TokenMap, VideoLayout, build_token_map


@dataclass
class Prompt:
    """A prompt ready to run: the processor's tensors, the decoded media and the token map.

    Attributes:
        text, system, thinking: what was asked.
        images, videos, audios: decoded media (PIL images, `VideoClip`s, `AudioClip`s) in prompt order.
        inputs: the processor's output (`input_ids`, `pixel_values`, `image_grid_hw`, `pixel_values_videos`,
            `input_features`, `input_features_mask`), torch tensors with batch size 1.
        token_map: one row per prompt token.
        reference: the expected answer, when known (studies score runs against it).
        turns: for a conversation (`lab.chat`), its messages as rendered (`conversation.Turn`: role and parts, each
            media part naming its index in `images` / `videos` / `audios`); empty for a single-turn `lab.prompt`.
    """

    text: str
    system: str | None
    thinking: bool
    images: list = field(default_factory=list)
    videos: list = field(default_factory=list)
    audios: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    token_map: TokenMap | None = None
    reference: str | None = None
    turns: tuple = ()

    @property
    def input_ids(self):
        """`(1, L)` prompt ids."""
        return self.inputs["input_ids"]

    def __len__(self) -> int:
        return int(self.inputs["input_ids"].shape[1])

    def __repr__(self) -> str:
        media_counts = f"{len(self.images)} image(s), {len(self.videos)} video(s), {len(self.audios)} audio clip(s)"
        return f"Prompt({len(self)} tokens; {media_counts}; text={self.text[:40]!r})"


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)) and not media.audio.is_pair(value):
        return list(value)
    return [value]


def _audios(audio) -> list:
    """A single clip (path, clip, `(waveform, rate)`) or a list of them; a flat list of numbers is one waveform."""
    if isinstance(audio, list) and audio and all(media.audio.is_rate(sample) for sample in audio[:64]):
        return [audio]
    return _as_list(audio)


def _videos(video) -> list:
    """A single video (path, clip, array, list of frames) or a list of videos."""
    if video is None:
        return []
    if (
        isinstance(video, list)
        and video
        and all(isinstance(v, (str, media.VideoClip)) or getattr(v, "ndim", 0) == 4 for v in video)
    ):
        return list(video)
    return [video]


def build_prompt(
    processor,
    context_length: int,
    text: str,
    images=None,
    video=None,
    audio=None,
    system: str | None = None,
    thinking: bool = False,
    fps: float | None = 1.0,
    max_frames: int = 128,
    reference: str | None = None,
    video_audio: bool = False,
) -> Prompt:
    """Decode media and build the token sequence with the model's own processor; see `Lab.prompt`."""
    text = validate.text("text", "" if text is None else text)
    system = validate.text("system", system, allow_none=True)
    thinking = validate.flag("thinking", thinking)
    fps = validate.number("fps", fps, low=0, low_open=True, allow_none=True, fix="pass frames per second, e.g. 1")
    max_frames = validate.number("max_frames", max_frames, low=1, high=media.LIMITS.max_frames, integer=True)
    audio_seconds = _audio_seconds_that_fit(processor, context_length)
    tracks = _video_tracks(_videos(video), validate.flag("video_audio", video_audio), audio_seconds)
    images = [media.load_image(image) for image in _as_list(images)]
    videos = [media.load_video(v, fps=fps, max_frames=max_frames) for v in _videos(video)]
    # the track is the audio block right after its video's block (images, video, its track, then other clips)
    audios = tracks + [media.load_audio(clip, max_seconds=audio_seconds) for clip in _audios(audio)]
    if not text.strip() and not (images or videos or audios):
        raise OmniLabInputError("the prompt is empty: give some text, or an image, video or audio clip to ask about")

    content = [{"type": "image", "image": image} for image in images]
    content += [{"type": "video", "video": clip.frames} for clip in videos]
    content += [{"type": "audio", "audio": clip.waveform} for clip in audios]
    if text:
        content.append({"type": "text", "text": text})
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]

    inputs = render_messages(processor, messages, videos, thinking, what="prompt")
    token_map = _lay_out(processor, inputs, images, videos, audios)
    length = int(inputs["input_ids"].shape[1])
    if length > context_length:
        counts = token_map.counts()
        raise OmniLabInputError(
            f"the prompt is {length} tokens ({', '.join(f'{k} {v}' for k, v in counts.items())}), longer than the "
            f"model's {context_length}-token context. Shorten the text, use fewer or smaller images, fewer video "
            f"frames (fps=, max_frames=) or shorter audio."
        )
    return Prompt(text, system, bool(thinking), images, videos, audios, inputs, token_map, reference)


def render_messages(processor, messages: list[dict], videos: list, thinking: bool, *, what: str) -> dict:
    """The processor's tensors for chat `messages` (the release's template, typed control tokens kept as text).

    Args:
        processor: the model's processor.
        messages: transformers' chat messages, media already decoded (videos as frames).
        videos: the decoded `VideoClip`s in prompt order (their timestamps label the frames).
        thinking: open the answer with `<think>`.
        what: "prompt" or "conversation", for the error message.
    Returns:
        dict of `(1, L)` tensors without `attention_mask`.
    Raises:
        OmniLabInputError: the processor rejected the media.
    """
    processor_kwargs = {}
    if videos:
        from transformers.video_utils import VideoMetadata

        processor_kwargs["video_metadata"] = [_metadata(VideoMetadata, clip) for clip in videos]
        processor_kwargs["do_sample_frames"] = False
    try:
        inputs = processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            sanitize_control_tokens=True,
            enable_thinking=bool(thinking),
            processor_kwargs=processor_kwargs,
        )
    except ValueError as error:
        raise OmniLabInputError(f"the processor rejected this {what}'s media: {error}") from None
    inputs = dict(inputs)
    inputs.pop("attention_mask", None)  # batch of one, nothing padded
    return inputs


def _metadata(VideoMetadata, clip: media.VideoClip):
    """The processor writes each frame's label as `frames_indices[i] x int(1000 / fps)` ms; a clip with presentation
    times (a decoded file) is described at 1000 "fps" with millisecond indices, so the label states its real time."""
    if clip.times is not None:
        fps, indices = 1000.0, [round(t * 1000) for t in clip.times]
    else:
        fps, indices = clip.fps, clip.frame_indices
    return VideoMetadata(
        total_num_frames=clip.num_frames, fps=fps, width=clip.size[0], height=clip.size[1], frames_indices=indices
    )


def _video_tracks(videos: list, video_audio: bool, max_seconds: float) -> list:
    """The sound track of the prompt's one video file when `video_audio` (decoded before the video, its length
    checked from the headers before either is decoded); [] otherwise."""
    if not video_audio:
        return []
    if len(videos) != 1:
        raise OmniLabInputError(
            f"video_audio=True takes the sound of one video file, and this prompt has {len(videos)} videos; give "
            "exactly one video=, or pass the sound of the others as audio= clips"
        )
    return [media.load_video_audio(videos[0], max_seconds=max_seconds)]


def _audio_seconds_that_fit(processor, context_length: int) -> float:
    """Seconds of audio whose tokens fill the context (the clip is refused past this, before it is decoded)."""
    per_second = processor._estimate_audio_num_embeddings(media.SAMPLING_RATE * 10) / 10
    return context_length / max(per_second, 1e-9) + 1.0


def _lay_out(processor, inputs: dict, images, videos, audios, order=None, turns=None) -> TokenMap:
    """The token map of the processor's output; `order` and `turns` as in `build_token_map` (a conversation's)."""
    tokenizer = processor.tokenizer
    merge = round(1 / processor.image_processor.downsample_ratio)
    patch = processor.image_processor.patch_size
    image_layouts = []
    for image, (grid_h, grid_w) in zip(images, inputs.get("image_grid_hw", np.zeros((0, 2))).tolist(), strict=True):
        image_layouts.append(
            ImageLayout(grid_h // merge, grid_w // merge, media.original_size(image), (grid_w * patch, grid_h * patch))
        )
    video_layouts = []
    if videos:
        tubelets = inputs["pixel_values_videos"]  # (videos, tubelets, 2*C, H, W)
        height, width = tubelets.shape[-2:]
        video_patch = processor.video_processor.patch_size
        for clip in videos:
            video_layouts.append(
                VideoLayout(
                    tubelets=int(tubelets.shape[1]),
                    rows=height // video_patch // merge,
                    cols=width // video_patch // merge,
                    original_size=clip.size,
                    resized_size=(int(width), int(height)),
                    frame_indices=tuple(clip.frame_indices),
                    frame_times=tuple(clip.timestamps()),
                    frames_per_tubelet=processor.video_temporal_patch_dim,
                )
            )
    audio_layouts = [
        AudioLayout(processor._estimate_audio_num_embeddings(len(clip.waveform)), clip.seconds, clip.start)
        for clip in audios
    ]
    ids = inputs["input_ids"][0].tolist()
    special_ids = set(tokenizer.all_special_ids) | {
        token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special
    }
    return build_token_map(
        np.asarray(ids),
        token_texts(tokenizer, ids),
        special_ids,
        {"image": processor.image_token_id, "audio": processor.audio_token_id},
        image_layouts,
        video_layouts,
        audio_layouts,
        order=order,
        turns=turns,
    )


def token_texts(tokenizer, ids) -> list[str]:
    """Readable text of each token (each distinct id decoded once, on its own)."""
    ids = [int(i) for i in ids]
    unique = sorted(set(ids))
    decoded = dict(zip(unique, tokenizer.batch_decode([[i] for i in unique], skip_special_tokens=False), strict=True))
    return [decoded[i] for i in ids]
