"""The inputs the playground's tabs share: the media inputs of the tabs that take one question (Ask, Compare: image,
video with its "use the video's sound" toggle, and audio from a file or the microphone), and the decoding controls
of every tab (the thinking box, the max-new-tokens slider, the reducer's rate slider)."""

from __future__ import annotations

import gradio as gr


def media_inputs(prefix: str, height: int) -> tuple:
    """Build the image, video, video-sound toggle and audio inputs in the current `gr.Row`.

    Args:
        prefix: element-id prefix ("" gives `image-input`, `video-input`, `video-audio`, `audio-input`; "compare-"
            gives `compare-image`, `compare-video`, `compare-video-audio`, `compare-audio`).
        height: the image and video boxes' height in pixels.
    Returns:
        (image, video, video_audio, audio) components.
    """
    suffix = "-input" if not prefix else ""
    image = gr.Image(
        label="Image", type="filepath", sources=["upload"], height=height, elem_id=f"{prefix}image{suffix}"
    )
    with gr.Column(min_width=160):
        video = gr.Video(label="Video", sources=["upload"], height=height, elem_id=f"{prefix}video{suffix}")
        video_audio = gr.Checkbox(
            label="Use the video's sound",
            value=True,
            elem_id=f"{prefix}video-audio",
            info="Its sound track goes right after the video, as the release serves it.",
        )
    audio = gr.Audio(
        label="Audio (file or microphone)",
        type="filepath",
        sources=["upload", "microphone"],
        elem_id=f"{prefix}audio{suffix}",
        scale=2,
    )
    return image, video, video_audio, audio


def thinking_box(note: str | None, info: str = "Let the model reason before it answers.", elem_id=None):
    """The "Thinking" checkbox: off, and disabled with `note` (`handlers.reasoning_note`) where the model has no
    reasoning mode."""
    return gr.Checkbox(label="Thinking", value=False, interactive=note is None, info=note or info, elem_id=elem_id)


def new_tokens_slider(settings, value: int):
    """The "Max new tokens" slider, up to the playground's limit (`settings.max_new_tokens`), starting at `value`."""
    maximum = settings.max_new_tokens
    return gr.Slider(label="Max new tokens", minimum=1, maximum=maximum, step=1, value=min(value, maximum))


def rate_slider(value: float, label: str = "Rate (fraction of tokens dropped)", **options):
    """A reducer's rate slider, 0 to 0.95 in steps of 0.05."""
    return gr.Slider(label=label, minimum=0.0, maximum=0.95, step=0.05, value=value, **options)
