"""The media inputs every playground tab that takes one question shares (Ask, Compare): image, video with its
"use the video's sound" toggle, and audio from a file or the microphone."""

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
