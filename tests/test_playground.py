"""The Gradio playground: handlers called directly on the toy twin, the built app, and `/ask` under 10 clients."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from omni_lab.playground import build_app, handlers  # noqa: E402
from omni_lab.playground.examples import EXAMPLES_DIR, load_examples  # noqa: E402
from tests import media_corpus, synth  # noqa: E402
from tests.browser_support import free_port  # noqa: E402

EXAMPLES = load_examples()
EVS_RATE_OF_THE_TWIN = 0.7  # config.video_pruning_rate of the shipped toy twin (its model card)


@pytest.fixture(scope="module")
def settings(twin_lab):
    return handlers.default_settings(twin_lab)


def ask_all(lab, settings, question, reducer="model", rate=0.5, max_new_tokens=16, **media):
    """Every tuple `handlers.ask` yields, in order."""
    return list(
        handlers.ask(lab, settings, question, reducer=reducer, rate=rate, max_new_tokens=max_new_tokens, **media)
    )


def expected_after(before: dict, frames: int | None, reducer: str, rate: float) -> dict:
    """Tokens per modality after reduction, from the reducers' documented budgets (not from the run)."""
    after = dict(before)
    if frames is not None and reducer in ("model", "evs"):
        video_rate = EVS_RATE_OF_THE_TWIN if reducer == "model" else rate
        tubelets = -(-frames // 2)  # 2-frame tubelets, 16 tokens each (the twin's card)
        after["video"] = max(16, int(tubelets * 16 * (1 - video_rate)))
    if reducer == "random":
        for modality in ("image", "video", "audio"):
            if modality in after:
                after[modality] = max(1, int(before[modality] * (1 - rate) + 1e-9))
    return after


# ----------------------------------------------------------------------------------------------------- the gallery
def test_the_gallery_covers_every_basic_family_and_task_and_stays_under_1_mb():
    """The gallery is the default twin's ("toy": the basic tier; the hard tier is "toy-hard"'s)."""
    from omni_lab.toy import shapesworld

    assert {(example.family, example.task) for example in EXAMPLES} == {
        (family, task) for family in shapesworld.TIERS["basic"] for task in shapesworld.TASKS[family]
    }
    kinds = {"image": {"image"}, "video": {"video"}, "audio": {"audio"}, "omni": {"video", "audio"}, "text": set()}
    for example in EXAMPLES:
        assert set(example.media()) == kinds[example.family], example.name
        assert example.seed >= shapesworld.EVAL_SEED_BASE  # held out: never in training media
        truth = shapesworld.sample(example.seed, example.family, example.task)
        assert (truth.question, truth.answer) == (example.question, example.answer)
    assert sum(path.stat().st_size for path in EXAMPLES_DIR.iterdir()) < 1_000_000


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_every_shipped_example_gets_its_known_answer_with_figures_and_consistent_stats(twin_lab, settings, example):
    outputs = ask_all(twin_lab, settings, example.question, **example.media())
    answer, stats, *figure_set = outputs[-1]
    assert answer == example.answer
    assert outputs[0] == ("", {}, None, None, None)  # the page is cleared before anything runs
    for figure in figure_set:
        assert type(figure).__name__ == "Figure" and len(figure.data) > 0
    reduction, routing, attention = (figure.layout.title.text for figure in figure_set)
    panel = {"audio": "Audio timeline", "text": "Prompt tokens per modality"}.get(example.family, "Token reduction map")
    assert reduction.startswith(panel)
    assert routing.startswith("Expert routing") and attention.startswith("Attention and Mamba mass")
    # the stats against the prompt's own token map and the reducers' budgets
    prompt = handlers.build_prompt(twin_lab, settings, example.question, **example.media())
    before = prompt.token_map.counts()
    frames = prompt.videos[0].num_frames if prompt.videos else None
    assert stats["tokens_before"] == before
    assert stats["tokens_after"] == expected_after(before, frames, "model", 0.0)
    assert stats["answer"] == answer and len(stats["generated_ids"]) >= 2  # the answer and the end token
    if example.family == "text":  # the counts panel draws the token map's own counts
        bars = {trace.name: dict(zip(trace.x, trace.y, strict=True)) for trace in figure_set[0].data}
        assert bars["kept"] == stats["tokens_after"] and set(bars["pruned"].values()) == {0}
    assert stats["timings"]["first_token_s"] <= stats["timings"]["request_s"]


def test_the_answer_streams_token_by_token_and_ends_as_the_run_does(twin_lab, settings):
    example = next(example for example in EXAMPLES if example.family == "omni")
    outputs = ask_all(twin_lab, settings, example.question, **example.media())
    streamed = [output[0] for output in outputs[1:-1]]
    final_answer, stats = outputs[-1][:2]
    assert len(streamed) == len(stats["generated_ids"]) >= 3  # "5, left" and the end token: one update per token
    assert all(later.startswith(earlier) for earlier, later in zip(streamed, streamed[1:], strict=False))
    assert streamed[-1].strip() == final_answer == example.answer
    assert all(output[1:] == (gr.skip(),) * 4 for output in outputs[1:-1])  # only the answer changes mid-stream
    run = twin_lab.run(
        handlers.build_prompt(twin_lab, settings, example.question, **example.media()), max_new_tokens=16
    )
    assert stats["generated_ids"] == run.generated_ids
    assert stats["tokens_after"] == {k: v for k, v in run.token_map.counts(kept=True).items() if k != "generated"}


def test_a_webm_upload_answers_like_the_shipped_mp4(twin_lab, settings, tmp_path):
    import av

    import omni_lab as ol

    example = next(example for example in EXAMPLES if example.name == "omni-count-and-direction")
    clip = ol.load_video(example.video, fps=None)
    webm = tmp_path / "clip.webm"
    with av.open(str(webm), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=int(clip.fps))
        stream.width, stream.height, stream.pix_fmt = clip.size[0], clip.size[1], "yuv420p"
        stream.options = {"crf": "10", "b": "0"}
        for frame in clip.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    from_mp4 = ask_all(twin_lab, settings, example.question, **example.media())[-1]
    from_webm = ask_all(twin_lab, settings, example.question, audio=example.audio, video=str(webm))[-1]
    assert from_webm[0] == from_mp4[0] == example.answer
    assert from_webm[1]["tokens_before"] == from_mp4[1]["tokens_before"]  # every frame sampled from both files


# ----------------------------------------------------------------------------------------------------- reducers
def test_reducer_names_map_to_reducers():
    from omni_lab import reducers

    assert handlers.make_reducer("model", 0.3) == "model" and handlers.make_reducer("none", 0.3) is None
    kinds = {"evs": reducers.EVS, "pixeldiff": reducers.PixelDiff, "random": reducers.RandomDrop}
    kinds |= {"divprune": reducers.DivPrune, "tome": reducers.ToMe}
    for name, kind in kinds.items():
        reducer = handlers.make_reducer(name, 0.25)
        assert isinstance(reducer, kind) and reducer.rate == 0.25
    assert handlers.make_reducer("uniform", 0.5).keep_every == 2
    assert handlers.make_reducer("uniform", 0.75).keep_every == 4
    assert handlers.make_reducer("uniform", 0.0).keep_every == 1
    with pytest.raises(handlers.OmniLabInputError, match="not one of"):
        handlers.make_reducer("fastv", 0.5)  # FastV needs its layer: not a menu entry
    with pytest.raises(handlers.OmniLabInputError, match=r"\[0, 1\)"):
        handlers.make_reducer("evs", 1.0)


@pytest.mark.parametrize("reducer,rate", [("none", 0.0), ("evs", 0.5), ("random", 0.5)])
def test_reducers_change_the_token_counts_as_their_budgets_say(twin_lab, settings, reducer, rate):
    example = next(example for example in EXAMPLES if example.name == "omni-count-and-direction")
    image = next(example for example in EXAMPLES if example.family == "image")
    media = {**example.media(), "image": image.image}
    stats = ask_all(twin_lab, settings, example.question, reducer=reducer, rate=rate, **media)[-1][1]
    prompt = handlers.build_prompt(twin_lab, settings, example.question, **media)
    before = prompt.token_map.counts()
    assert stats["tokens_before"] == before
    assert stats["tokens_after"] == expected_after(before, prompt.videos[0].num_frames, reducer, rate)


@pytest.mark.parametrize("name", ["pyramiddrop", "sparsevlm"])
def test_a_reducer_inside_the_llm_answers_as_the_lab_does_and_its_panels_follow_the_drops(twin_lab, settings, name):
    from omni_lab import reducers
    from omni_lab.presets import layers

    example = next(example for example in EXAMPLES if example.name == "video-moving-colour")
    *_, (answer, stats, reduction, routing, attention) = ask_all(
        twin_lab, settings, example.question, reducer=name, rate=0.5, max_new_tokens=4, **example.media()
    )
    prompt = handlers.build_prompt(twin_lab, settings, example.question, **example.media())
    expected = twin_lab.run(prompt, max_new_tokens=4, reducer=reducers.at_rate(name, 0.5))
    assert answer == expected.answer and stats["reducers"] == {"llm": repr(reducers.at_rate(name, 0.5))}
    assert stats["prefill_flops_saved_fraction"] == round(expected.to_dict()["flops"]["saved_share"], 4) > 0
    assert reduction.data and routing.data and attention.data  # every panel is drawn
    # the routing strip has a gap exactly where a token had left the sequence before that MoE layer
    strip = np.asarray(next(trace for trace in routing.data if trace.name == "top expert").z, dtype=float)
    dropped = np.full(strip.shape[1], -1)
    at_layer = expected.token_map.by_position("dropped_at_layer")[: strip.shape[1]]
    dropped[: len(at_layer)] = at_layer
    moe = [info.index for info in layers(twin_lab.model) if info.kind == "moe"]
    gaps = np.array([(dropped >= 0) & (dropped < layer) for layer in moe])
    assert gaps.any() and np.array_equal(np.isnan(strip), gaps)


# ------------------------------------------------------------------------------------------------- bad requests
def _corrupt_png(folder):
    path = folder / "holiday.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 20)
    return path


def _text_as_image(folder):
    path = folder / "notes.txt"
    path.write_text("a shopping list")
    return path


def _cut_mp4(folder):
    return media_corpus.cut(media_corpus.write_video(folder / "clip.mp4"), 0.5)


def _cut_opus(folder):
    return media_corpus.cut(media_corpus.write_audio(folder / "voice.opus", 1.0, 48000, 1, "libopus"), 0.9)


def _one_hertz_wav(folder):
    import soundfile

    path = folder / "slow.wav"
    soundfile.write(str(path), np.zeros(64, np.float32), 1)  # libsndfile writes any rate
    return path


def _long_video(folder):
    return synth.write_video(folder / "long.mp4", count=72, fps=8, width=64, height=64)  # 9 s at 8 fps = 72 frames


def _truncated_audio(folder):
    return synth.truncate(synth.write_audio(folder / "beeps.wav", seconds=1.0), 0.3)


BAD_UPLOADS = [
    ("image", _corrupt_png, "'holiday.png' could not be decoded"),
    ("image", _text_as_image, "'notes.txt' has an unsupported type '.txt'"),
    ("video", _corrupt_png, "'holiday.png' has an unsupported type '.png'"),
    ("video", _long_video, "over this model's 64-frame budget"),
    ("audio", _truncated_audio, "'truncated_beeps.wav' is truncated"),
    ("video", _cut_mp4, "'cut50_clip.mp4' is truncated"),
    ("audio", _cut_opus, "'cut90_voice.opus' is truncated"),
    ("audio", _one_hertz_wav, "'slow.wav' states a sampling rate of 1 Hz"),
]


@pytest.mark.parametrize("kind,make,message", BAD_UPLOADS, ids=[f"{k}-{m.__name__[1:]}" for k, m, _ in BAD_UPLOADS])
def test_a_bad_upload_is_a_named_gradio_error_and_the_next_request_answers(
    twin_lab, settings, tmp_path, kind, make, message
):
    path = make(tmp_path)
    payload = {"path": str(path), "orig_name": path.name}  # what gradio hands the handler
    with pytest.raises(gr.Error) as caught:
        ask_all(twin_lab, settings, "What colour is the square?", **{kind: payload})
    assert message in caught.value.message
    assert str(tmp_path) not in caught.value.message  # the user's file name, not the server's temporary path
    example = EXAMPLES[0]
    assert ask_all(twin_lab, settings, example.question, **example.media())[-1][0] == example.answer


def test_uploads_over_the_size_limit_are_refused_before_decoding(twin_lab, tmp_path):
    small = handlers.default_settings(twin_lab, max_file_mb=0.001)  # 1000 bytes
    example = next(example for example in EXAMPLES if example.family == "image")
    with pytest.raises(gr.Error, match=r"over this playground's 0.001 MB upload limit"):
        ask_all(twin_lab, small, example.question, image=example.image)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"reducer": "fastv"}, "reducer 'fastv' is not one of"),
        ({"rate": 1.5, "reducer": "evs"}, "must be in [0, 1)"),
        ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and 64"),
        ({"question": ""}, "the prompt is empty"),
        ({"thinking": True}, "no reasoning mode"),
    ],
)
def test_bad_arguments_are_named_gradio_errors(twin_lab, settings, changes, message):
    arguments = {"question": "What number comes after 3?", "reducer": "model", "rate": 0.5, "max_new_tokens": 16}
    arguments |= changes
    with pytest.raises(gr.Error) as caught:
        list(handlers.ask(twin_lab, settings, **arguments))
    assert message in caught.value.message


def test_the_time_limit_stops_a_request_and_gives_the_model_back(twin_lab):
    impatient = handlers.default_settings(twin_lab, time_limit_s=0.0)
    with pytest.raises(gr.Error, match="per-request time limit"):
        ask_all(twin_lab, impatient, "What number comes after 3?")
    finished = threading.Event()
    worker = threading.Thread(target=lambda: (twin_lab.run("What number comes after 3?"), finished.set()))
    worker.start()
    worker.join(timeout=60)
    assert finished.is_set()  # the stopped stream released the Lab


def test_requests_share_nothing(twin_lab, settings):
    image = next(example for example in EXAMPLES if example.family == "image")
    text = next(example for example in EXAMPLES if example.family == "text")
    first = ask_all(twin_lab, settings, image.question, **image.media())[-1]
    second = ask_all(twin_lab, settings, text.question)[-1]
    again = ask_all(twin_lab, settings, image.question, **image.media())[-1]
    assert second[0] == text.answer and set(second[1]["tokens_before"]) == {"text"}
    assert first[0] == again[0] == image.answer
    assert first[1]["tokens_after"] == again[1]["tokens_after"]
    assert first[1]["generated_ids"] == again[1]["generated_ids"]


def test_the_thinking_toggle_is_off_with_a_note_for_the_twin(twin_lab):
    note = handlers.reasoning_note(twin_lab)
    assert note is not None and "no reasoning" in note
    assert handlers.reasoning_note(twin_lab, handlers.PlaygroundSettings(reasoning=True)) is None
    app = build_app(twin_lab)
    toggle = next(block for block in app.blocks.values() if getattr(block, "label", None) == "Thinking")
    assert toggle.interactive is False and toggle.info == note


# -------------------------------------------------------------------------------------------------------- the app
def test_build_app_has_one_public_ask_endpoint_serialised_on_the_model(twin_lab):
    app = build_app(twin_lab)
    assert isinstance(app, gr.Blocks) and not app.is_running
    endpoints = app.get_api_info()["named_endpoints"]
    assert list(endpoints)[:2] == ["/ask", "/compare"]  # /compare: tests/test_playground_compare.py
    names = [parameter["parameter_name"] for parameter in endpoints["/ask"]["parameters"]]
    assert names == [
        "question", "image", "video", "audio", "reducer", "rate", "max_new_tokens", "thinking", "video_audio"
    ]  # fmt: skip
    defaults = [parameter.get("parameter_default") for parameter in endpoints["/ask"]["parameters"][-2:]]
    assert defaults == [False, True]  # thinking and video_audio may be left out (older 7- and 8-argument calls)
    assert len(endpoints["/ask"]["returns"]) == 5
    model_events = [fn for fn in app.fns.values() if fn.concurrency_id == "model"]
    assert {"ask", "compare"} <= {fn.api_name for fn in model_events}  # one group for every event using the model
    assert all(fn.concurrency_limit == 1 for fn in model_events)
    assert app._queue.max_size == handlers.default_settings(twin_lab).queue_size


@pytest.mark.slow
def test_ten_concurrent_clients_get_their_own_right_answers(twin_lab):
    from gradio_client import Client, handle_file

    from omni_lab.playground import launch

    app, url = launch(twin_lab, port=free_port(), block=False, quiet=True)
    try:
        chosen = [EXAMPLES[index % len(EXAMPLES)] for index in range(0, 10 * 3, 3)]  # 10 different examples
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        def call(index, example):
            try:
                client = Client(url, verbose=False)
                files = {kind: handle_file(path) if path else None for kind, path in example.media().items()}
                arguments = [example.question, files.get("image"), files.get("video"), files.get("audio")]
                results[index] = client.predict(*arguments, "model", 0.5, 16, api_name="/ask")[0]
            except BaseException as error:  # reported below, with the index
                errors.append(error)

        threads = [threading.Thread(target=call, args=(index, example)) for index, example in enumerate(chosen)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert results == {index: example.answer for index, example in enumerate(chosen)}
        assert len({example.name for example in chosen}) == 10
        assert time.perf_counter() - started < 300
    finally:
        app.close()


def test_importing_the_playground_package_does_not_import_gradio():
    import subprocess
    import sys

    code = "import sys, omni_lab.playground; print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.slow
def test_the_examples_generator_reproduces_the_shipped_gallery(tmp_path, twin_lab):
    from omni_lab.playground import make_examples

    make_examples.make_examples(tmp_path, lab=twin_lab)
    regenerated = load_examples(tmp_path)
    fields = [(e.name, e.seed, e.question, e.answer) for e in regenerated]
    assert fields == [(e.name, e.seed, e.question, e.answer) for e in EXAMPLES]
    for new, shipped in zip(regenerated, EXAMPLES, strict=True):
        assert {kind: Path(path).name for kind, path in new.media().items()} == {
            kind: Path(path).name for kind, path in shipped.media().items()
        }
