"""The playground's request handlers: uploads -> prompt -> streamed run -> answer, stats and figures.

Every handler is a module-level function that takes the `Lab` (and the app's `PlaygroundSettings`) explicitly, so
tests call them directly on the toy twin without a server (house style: no closures in `main()`). `ask` is the
`/ask` endpoint: a generator that yields the answer as it is decoded, then the stats and the three figures.

Uploads arrive as gradio's raw file payloads (`{"path": ..., "orig_name": ...}`; the event skips gradio's own
preprocessing, which would fail on a corrupt image with a message about gradio internals) or, from Python, as
paths. Each is checked against the upload size limit, then decoded by `omni_lab.media`; anything omni-lab cannot use
(`OmniLabInputError`: corrupt, truncated, wrong type, too long for the frame budget, empty prompt) becomes a
`gr.Error` naming the input by the name it was uploaded under, so the page and the API show the problem and the app
keeps serving. Nothing is kept between requests: each request's prompt, run and figures live only in its own call.
"""

from __future__ import annotations

import contextlib
import html
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from .. import media
from ..errors import OmniLabInputError, OmniLabModelError
from ..modalities import MEDIA
from .figures import figures

REDUCERS = (
    "model",
    "none",
    "evs",
    "pixeldiff",
    "random",
    "uniform",
    "divprune",
    "tome",
    "visionzip",
    "pyramiddrop",
    "sparsevlm",
    "downsample",
)
REDUCER_HELP = {
    "model": "the model's own EVS video pruning at its configured rate (rate slider unused)",
    "none": "no reduction (rate slider unused)",
    "evs": "EVS: drop temporally static video tokens",
    "pixeldiff": "PixelDiff: drop video tokens whose pixels change least",
    "random": "RandomDrop: drop a random subset of image, video and audio tokens",
    "uniform": "UniformTemporal: keep every k-th video tubelet, k = round(1 / (1 - rate))",
    "divprune": "DivPrune: keep a max-min diverse subset of image, video and audio tokens",
    "tome": "ToMe: merge similar image and video tokens",
    "visionzip": "VisionZip: keep the image and video tokens the vision encoder's CLS tokens attend to, merge the rest",
    "pyramiddrop": "PyramidDrop: drop image and video tokens in stages inside the LLM, by the last instruction token's "
    "attention (the routing and attention panels show each token only at the layers it reached)",
    "sparsevlm": "SparseVLM: keep the image and video tokens the question's tokens attend to, inside the LLM, recycling "
    "the pruned ones (panels as PyramidDrop's)",
    "downsample": "Downsample: smaller images and fewer video frames with the same token budget (a control)",
}


@dataclass(frozen=True)
class PlaygroundSettings:
    """Limits one playground applies to every request.

    Attributes:
        max_file_mb: largest accepted upload, in megabytes (10**6 bytes); also gradio's upload limit at launch.
        fps: frames per second sampled from an uploaded video (None: every frame).
        max_frames: the frame budget: a video that needs more frames at `fps` is refused, not silently thinned.
        max_new_tokens: the largest `max_new_tokens` a request may ask for.
        time_limit_s: a request still decoding after this many seconds is stopped with an error.
        queue_size: requests that may wait for the model; more are turned away until the queue drains.
        reasoning: whether the model can reason (the thinking toggle); None: decided from the model.
    """

    max_file_mb: float = 50.0
    fps: float | None = 1.0
    max_frames: int = 128
    max_new_tokens: int = 512
    time_limit_s: float = 120.0
    queue_size: int = 64
    reasoning: bool | None = None

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 10**6)


def is_shapesworld_model(lab) -> bool:
    """True for the toy twin and any checkpoint `omni-lab train-toy` wrote (its model card names ShapesWorld)."""
    path = getattr(lab.source, "path", None)
    if path is None:
        return False
    card = Path(path) / "README.md"
    return card.is_file() and "ShapesWorld" in card.read_text(errors="ignore")[:2000]


def default_settings(lab, **overrides) -> PlaygroundSettings:
    """Settings that suit `lab`: ShapesWorld models see clips at their native 8 fps with a 64-frame budget (the hard
    tier's longest clip, what they were trained on); other models get NVIDIA's recipe, 1 fps and up to 128 frames.

    Args:
        lab: the loaded `Lab`.
        overrides: any `PlaygroundSettings` field.
    Returns:
        `PlaygroundSettings`.
    """
    if is_shapesworld_model(lab):
        from ..toy import shapesworld

        values = {"fps": shapesworld.VIDEO_FPS, "max_frames": shapesworld.MAX_VIDEO_FRAMES, "max_new_tokens": 64}
    else:
        values = {"fps": 1.0, "max_frames": 128}
    return PlaygroundSettings(**(values | overrides))


def reasoning_note(lab, settings: PlaygroundSettings | None = None) -> str | None:
    """Why the thinking toggle is off for this model, or None when the model can reason.

    Args:
        lab: the loaded `Lab`.
        settings: `settings.reasoning` True/False overrides the guess from the model source.
    Returns:
        a sentence for the UI, or None.
    """
    if settings is not None and settings.reasoning is not None:
        return None if settings.reasoning else "Thinking is turned off for this playground."
    if lab.source.kind == "preset":
        return f"{lab.source.spec} has random weights: there is no reasoning to show."
    if is_shapesworld_model(lab):
        return "The toy twin was trained on short ShapesWorld answers only; it has no reasoning mode."
    return None


def make_reducer(name: str, rate: float):
    """The `lab.run(reducer=...)` value for a reducer name of the UI and the API.

    Args:
        name: one of `REDUCERS`.
        rate: the fraction of tokens to drop, in [0, 1) (unused by "model" and "none").
    Returns:
        "model", None, a reducer object or {modality: reducer}.
    Raises:
        OmniLabInputError: unknown name or a rate outside [0, 1).
    """
    from .. import reducers

    if name not in REDUCERS:
        raise OmniLabInputError(f"reducer {name!r} is not one of {', '.join(REDUCERS)}")
    if name == "model":
        return "model"
    if name == "none":
        return None
    return reducers.at_rate(name, rate)


# ------------------------------------------------------------------------------------------------------------ uploads
def upload_path(kind: str, value) -> tuple[Path, str] | None:
    """(server path, the name the user uploaded it under) of one upload, or None when nothing was given.

    Args:
        kind: "image", "video" or "audio" (for messages).
        value: None, a path, or gradio's file payload (a dict with "path" and "orig_name").
    Returns:
        `(Path, display name)` or None.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):
        if isinstance(value.get("video"), dict):  # older gradio wraps a video as {"video": FileData, ...}
            value = value["video"]
        if not value.get("path"):
            raise OmniLabInputError(f"the {kind} upload carries no file; upload it again")
        path = Path(value["path"])
        return path, str(value.get("orig_name") or path.name)
    if isinstance(value, (str, os.PathLike)):
        return Path(value), Path(value).name
    raise OmniLabInputError(f"the {kind} input takes a file, got {type(value).__name__}")


def _checked(kind: str, value, settings: PlaygroundSettings) -> tuple[Path, str] | None:
    upload = upload_path(kind, value)
    if upload is None:
        return None
    path, name = upload
    if not path.is_file():
        raise OmniLabInputError(f"the {kind} file {name!r} is missing on the server; upload it again")
    size = path.stat().st_size
    if size > settings.max_file_bytes:
        raise OmniLabInputError(
            f"the {kind} file {name!r} is {size / 1e6:.1f} MB, over this playground's {settings.max_file_mb:g} MB "
            f"upload limit; upload a smaller file (or start the playground with a larger --max-file-mb)"
        )
    return path, name


def _renamed(error: OmniLabInputError, path: Path, name: str) -> OmniLabInputError:
    """The same error with the server's temporary path replaced by the name the user knows."""
    return OmniLabInputError(str(error).replace(repr(str(path)), repr(name)).replace(str(path), name))


def load_uploads(image, video, audio, settings: PlaygroundSettings) -> dict:
    """Decode and validate the uploads into `lab.prompt` keyword arguments.

    Args:
        image, video, audio: None, paths or gradio file payloads.
        settings: the size limit, video fps and frame budget.
    Returns:
        {"images": [PIL.Image], "video": VideoClip, "audio": AudioClip} for the uploads given.
    Raises:
        OmniLabInputError: over the size limit, wrong type, corrupt or truncated, a video over the frame budget.
    """
    loaded = {}
    for kind in MEDIA:
        upload = _checked(kind, {"image": image, "video": video, "audio": audio}[kind], settings)
        if upload is None:
            continue
        path, name = upload
        try:
            if kind == "image":
                loaded["images"] = [media.load_image(path)]
            elif kind == "video":
                loaded["video"] = _load_video_in_budget(path, name, settings)
            else:
                loaded["audio"] = media.load_audio(path)
        except OmniLabInputError as error:
            raise _renamed(error, path, name) from None
    return loaded


def _load_video_in_budget(path: Path, name: str, settings: PlaygroundSettings):
    # One frame past the budget tells "fits" from "too long" without decoding more than needed to know it.
    clip = media.load_video(path, fps=settings.fps, max_frames=settings.max_frames + 1)
    if clip.num_frames <= settings.max_frames:
        return clip
    rate = settings.fps or clip.fps or 1.0
    seconds = (clip.frame_indices[-1] + 1) / clip.fps if clip.fps else None
    lasts = f"lasts about {seconds:.1f} s and " if seconds else ""
    sampling = f"at {rate:g} frames per second " if settings.fps or clip.fps else ""
    raise OmniLabInputError(
        f"the video {name!r} {lasts}needs more than {settings.max_frames} frames {sampling}— over this model's "
        f"{settings.max_frames}-frame budget; trim it to at most {settings.max_frames / rate:.1f} s"
    )


def build_prompt(
    lab,
    settings: PlaygroundSettings,
    question: str,
    image=None,
    video=None,
    audio=None,
    thinking=False,
    video_audio=False,
):
    """The `Prompt` of one request, from its question and uploads.

    With `video_audio`, an uploaded video's own sound track is the first audio clip (right after the video, before
    an uploaded audio clip), as `lab.prompt(..., video_audio=True)` places it; a video without a track goes on
    without sound (`silent_video_note` says so).

    Returns:
        `Prompt`.
    Raises:
        OmniLabInputError: a bad upload, an empty prompt, thinking asked of a model without reasoning.
    """
    if question is not None and not isinstance(question, str):
        raise OmniLabInputError(f"the question must be text, got {type(question).__name__}")
    note = reasoning_note(lab, settings)
    if thinking and note is not None:
        raise OmniLabInputError(f"thinking=True: {note} Ask again with thinking off.")
    uploads = load_uploads(image, video, audio, settings)
    if video_audio and "video" in uploads:
        track = _video_sound(lab, video)
        if track is not None:
            uploads["audio"] = [track, *([uploads["audio"]] if "audio" in uploads else [])]
    return lab.prompt(question or "", thinking=bool(thinking), **uploads)


def _video_sound(lab, video):
    """The uploaded video's sound track on its clock (`media.load_video_audio`, its length checked against the
    context before decoding), or None when the file has none."""
    from ..prompt import _audio_seconds_that_fit

    path, name = upload_path("video", video)
    try:
        if not media.has_sound_track(path):
            return None
        return media.load_video_audio(path, max_seconds=_audio_seconds_that_fit(lab.processor, lab.context_length))
    except OmniLabInputError as error:
        raise _renamed(error, path, name) from None


def silent_video_note(video, audio=None) -> str | None:
    """The note shown when the video's sound was asked for and the uploaded video has no sound track (else None).

    No note when an audio file came with the video: its sound is then the audio upload (as in the gallery's video +
    audio examples), which is what the person meant."""
    upload = upload_path("video", video)
    if upload is None or upload_path("audio", audio) is not None or media.has_sound_track(upload[0]):
        return None
    return f"The video {upload[1]!r} has no sound track: answered from its pictures alone."


# ------------------------------------------------------------------------------------------------------------- stats
def run_stats(lab, run, first_token_s: float | None, request_s: float) -> dict:
    """The JSON-able stats shown beside an answer and returned by `/ask`.

    Args:
        lab: the `Lab` that ran.
        run: its `Run`.
        first_token_s: seconds from the start of the request to the first decoded token (None if none).
        request_s: seconds the whole request took (figures included).
    Returns:
        `run.to_dict()` (answer, "tokens_before" / "tokens_after" per modality, "timings", "tokens_per_second",
        reducers, captures, "flops") with "model", the share of media tokens kept, the share of prefill FLOPs the
        reduction saved and its equivalent tokens (the ledger's estimate), and "first_token_s" / "request_s" added
        to the timings.
    """
    summary = run.to_dict()
    media = MEDIA
    before = sum(summary["tokens_before"].get(modality, 0) for modality in media)
    after = sum(summary["tokens_after"].get(modality, 0) for modality in media)
    if first_token_s is not None:
        summary["timings"]["first_token_s"] = round(first_token_s, 4)
    summary["timings"]["request_s"] = round(request_s, 4)
    first = {"model": lab.source.spec, "answer": summary["answer"]}
    first |= {key: summary[key] for key in ("tokens_before", "tokens_after", "tokens_total")}
    first["media_tokens_kept_fraction"] = round(after / before, 4) if before else None
    flops = summary.get("flops") or {}
    if flops:  # the ledger's estimate: what the reduction saved, in FLOPs and in equivalent tokens
        first["prefill_flops_saved_fraction"] = round(flops["saved_share"], 4)
        first["equivalent_tokens"] = flops["equivalent_tokens"]
    first |= {key: summary[key] for key in ("reducers", "timings", "tokens_per_second")}
    return first | summary  # the headline figures first, then the rest of the run's summary


def captures(reducer=None) -> list:
    """What a playground run captures, whatever the reducer: expert routing, and attention and Mamba mass of the
    answer's queries. With a reducer that drops tokens inside the LLM (`in_llm`: PyramidDrop, SparseVLM) the captures
    follow the shrinking sequence (`capture.hooks.Calls`): a dropped token is absent from the layers after its drop.

    Args:
        reducer: the run's reducer (every reducer gets the same captures; kept for the callers that pass it).
    """
    from .. import capture

    return ["routing", capture.attention_mass(queries="answer"), capture.mamba_mass(queries="answer")]


# ------------------------------------------------------------------------------------------------------------ asking
def ask(
    lab,
    settings: PlaygroundSettings,
    question: str,
    image=None,
    video=None,
    audio=None,
    reducer: str = "model",
    rate: float = 0.5,
    max_new_tokens: int = 16,
    thinking: bool = False,
    video_audio: bool = True,
    *,
    on_run=None,
):
    """Answer one question about optional image, video and audio uploads, streaming the answer.

    Args:
        lab: the loaded `Lab`.
        settings: the playground's limits.
        question: the user's text.
        image, video, audio: None, paths or gradio file payloads.
        reducer: one of `REDUCERS`.
        rate: fraction of tokens the reducer drops, in [0, 1).
        max_new_tokens: 1 to `settings.max_new_tokens`.
        thinking: let a reasoning model think first (refused for models without reasoning).
        video_audio: also give the model the uploaded video's own sound track (right after the video, as the
            release serves it); a video without one goes on without sound, and the stats say so ("note").
        on_run: called with `(run, stats)` once the answer is complete, before the last yield (the app keeps the
            run in the session's state for "Download"; keyword only, not an input of `/ask`).
    Yields:
        (answer so far, stats, reduction figure, routing figure, attention figure): first a cleared set, then one
        tuple per decoded token (the other outputs `gr.skip()`), then the final answer with everything filled in.
    Raises:
        gr.Error: any input problem (named), a model that cannot run, or the per-request time limit.
    """
    started = time.perf_counter()
    yield "", {}, None, None, None  # nothing of an earlier request stays on screen, also when this one fails
    try:
        max_new_tokens = _check_max_new_tokens(max_new_tokens, settings)
        run_reducer = make_reducer(reducer, rate)
        prompt = build_prompt(lab, settings, question, image, video, audio, thinking, video_audio)
        note = silent_video_note(video, audio) if video_audio else None
        run = first_token_at = None
        with contextlib.closing(stream_answer(lab, settings, prompt, run_reducer, max_new_tokens, started)) as stream:
            for item in stream:
                if isinstance(item, str):
                    yield item, gr.skip(), gr.skip(), gr.skip(), gr.skip()
                else:
                    run, first_token_at = item
        first_token_s = None if first_token_at is None else first_token_at - started
        figure_set = figures(run)
        stats = run_stats(lab, run, first_token_s, time.perf_counter() - started)
        if note is not None:
            stats = {"note": note, **stats}  # first, so it shows at the top of the stats
        if on_run is not None:
            on_run(run, stats)
    except (OmniLabInputError, OmniLabModelError) as error:
        # gr.Error renders its message as HTML: escape <, > and & of user-given names, keep quotes readable
        message = html.escape(str(error), quote=False)
        raise gr.Error(message, title="Cannot answer this request", print_exception=False) from None
    yield run.answer, stats, *figure_set


def stream_answer(lab, settings: PlaygroundSettings, prompt, reducer, max_new_tokens: int, started: float):
    """Stream one run of `prompt` with the playground's captures, within the request's time limit.

    Args:
        lab: the loaded `Lab`.
        settings: the playground's limits (`time_limit_s` counts from `started`).
        prompt: the `Prompt`.
        reducer: the `lab.run(reducer=...)` value (see `make_reducer`).
        max_new_tokens: already checked.
        started: `time.perf_counter()` at the start of the request.
    Yields:
        the answer so far (str) after each decoded token; last, `(run, first_token_at)`: the `Run` and the
        `time.perf_counter()` value when its first token arrived (None when it decoded none). Closing the generator
        gives the Lab back.
    Raises:
        OmniLabInputError: the answer was still being written after the time limit.
    """
    from ..lab import Run

    text = ""
    first_token_at = None
    stream = lab.stream(prompt, max_new_tokens=max_new_tokens, reducer=reducer, capture=captures(reducer))
    try:
        for item in stream:
            if isinstance(item, Run):
                yield item, first_token_at
                return
            text += item.text
            if first_token_at is None:
                first_token_at = time.perf_counter()
            if time.perf_counter() - started > settings.time_limit_s:
                raise OmniLabInputError(
                    f"the answer was still being written after {settings.time_limit_s:g} s, this playground's "
                    f"per-request time limit; ask for fewer new tokens or use shorter media"
                )
            yield text
    finally:
        stream.close()
    raise RuntimeError("the model's stream ended without its Run")


def _check_max_new_tokens(value, settings: PlaygroundSettings) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise OmniLabInputError(f"max_new_tokens must be a whole number, got {value!r}")
    if not 1 <= int(value) <= settings.max_new_tokens:
        raise OmniLabInputError(f"max_new_tokens must be between 1 and {settings.max_new_tokens}, got {int(value)}")
    return int(value)
