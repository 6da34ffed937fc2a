"""Widgets: the pure data layer on toy-twin runs, the plotly figures' contents, and the live widgets' updates.

Expectations come from the run itself (its token map, routing tensors, captured masses, prompt media) or from an
independent run of the same prompt, never from the code under test.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.capture import combine_in_layer_order
from omni_lab.modalities import MEDIA, VISUAL
from omni_lab.token_map import STATUSES
from omni_lab.toy import shapesworld

plotly = pytest.importorskip("plotly")
go = pytest.importorskip("plotly.graph_objects")
pytest.importorskip("ipywidgets")

from omni_lab.widgets import (  # noqa: E402
    AttributionOverlay,
    AudioTimeline,
    Dashboard,
    ExpertRoutingView,
    ModalityAttentionView,
    TokenReductionMap,
    data,
)


# ------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def omni_run(twin_lab):
    """Video + audio, EVS at 0.5, routing and both masses per query position."""
    example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 0), "omni")
    return twin_lab.run(
        example.prompt(twin_lab),
        max_new_tokens=6,
        capture=["routing", "attention_mass", "mamba_mass"],
        reducer=ol.reducers.EVS(0.5),
    )


@pytest.fixture(scope="module")
def image_run(twin_lab):
    """One image merged by ToMe at 0.5 (merged tokens and their targets), with routing."""
    example = shapesworld.sample(shapesworld.eval_seed(0, "image", 1), "image", "count")
    return twin_lab.run(
        example.prompt(twin_lab), max_new_tokens=4, capture=["routing"], reducer={"image": ol.reducers.ToMe(0.5)}
    )


@pytest.fixture(scope="module")
def audio_run(twin_lab):
    """Video + audio; AudioMerge on audio, masses pooled per 0.5 s audio window and for the answer as one group."""
    example = shapesworld.sample(shapesworld.eval_seed(0, "omni", 3), "omni")
    return twin_lab.run(
        example.prompt(twin_lab),
        max_new_tokens=6,
        capture=[
            ol.capture.attention_mass(segments="audio_window", seconds=0.5, queries="answer"),
            ol.capture.mamba_mass(segments="audio_window", seconds=0.5, queries="answer"),
        ],
        reducer={"audio": ol.reducers.AudioMerge(0.4), "video": ol.reducers.EVS(0.3)},
    )


def _media_rows(token_map) -> np.ndarray:
    return np.flatnonzero(token_map.rows(modality=MEDIA))


# --------------------------------------------------------------------------------------------------- data: tokens
@pytest.mark.parametrize("run_name", ["omni_run", "image_run", "audio_run"])
def test_kept_and_pruned_cover_every_media_token_exactly_once(request, run_name):
    run = request.getfixturevalue(run_name)
    token_map = run.token_map
    drawn = data.media_coverage(token_map)
    assert len(drawn) == len(np.unique(drawn)), "a media token is drawn twice"
    np.testing.assert_array_equal(np.sort(drawn), _media_rows(token_map))
    tables = [data.panel_tokens(token_map, panel) for panel in data.media_panels(token_map)]
    tables += [data.audio_tokens(token_map, item) for item in data.audio_items(token_map)]
    rows = np.concatenate([table.row.to_numpy() for table in tables])
    status = np.concatenate([table.status.to_numpy() for table in tables])
    kept = np.asarray(token_map["kept"])[rows]
    merged = np.asarray(token_map["merged_into"])[rows] >= 0
    np.testing.assert_array_equal(status == "kept", kept)
    np.testing.assert_array_equal(status == "merged", ~kept & merged)
    np.testing.assert_array_equal(status == "pruned", ~kept & ~merged)
    summary = run.ledger.summary()
    assert int((status == "kept").sum()) == int(summary.kept.sum())
    assert int((status != "kept").sum()) == int((summary.tokens - summary.kept).sum())


def test_panels_are_each_image_and_each_tubelet_in_grid_order(omni_run, image_run):
    video = omni_run.prompt.videos[0]
    panels = data.media_panels(omni_run.token_map)
    assert [p.modality for p in panels] == ["video"] * len(panels)
    assert len(panels) == -(-video.num_frames // 2)  # 2-frame tubelets, the last one padded
    assert [p.frames for p in panels] == [tuple(video.frame_indices[i : i + 2]) for i in range(0, video.num_frames, 2)]
    for panel in panels:
        table = data.panel_tokens(omni_run.token_map, panel)
        assert len(table) == panel.grid[0] * panel.grid[1]
        assert table.grid_row.tolist() == sorted(table.grid_row.tolist())
        np.testing.assert_array_equal(table.grid_col.to_numpy(), np.tile(np.arange(panel.grid[1]), panel.grid[0]))
    (image_panel,) = data.media_panels(image_run.token_map)
    assert (image_panel.modality, image_panel.item, image_panel.tubelet) == ("image", 0, -1)


@pytest.mark.parametrize("run_name", ["omni_run", "image_run"])
def test_pixel_boxes_are_drawn_inside_each_image(request, run_name):
    run = request.getfixturevalue(run_name)
    for panel in data.media_panels(run.token_map):
        media = run.prompt.images[panel.item] if panel.modality == "image" else run.prompt.videos[panel.item]
        width, height = media.size
        assert panel.size == (width, height)
        table = data.panel_tokens(run.token_map, panel)
        assert (table.x0 >= 0).all() and (table.y0 >= 0).all()
        assert (table.x1 <= width + 1e-6).all() and (table.y1 <= height + 1e-6).all()
        assert ((table.cx > 0) & (table.cx < width) & (table.cy > 0) & (table.cy < height)).all()
        pixels = data.panel_pixels(run.prompt, panel, max_side=64)
        assert pixels.dtype == np.uint8 and max(pixels.shape[:2]) <= 64
        assert abs(pixels.shape[1] / pixels.shape[0] - width / height) < 0.1


def test_score_and_status_grids_lay_rows_out_on_the_token_grid(omni_run):
    token_map = omni_run.token_map
    for panel in data.media_panels(token_map):
        scores = data.score_grid(token_map["score"], panel)
        status = data.status_grid(token_map, panel)
        table = data.panel_tokens(token_map, panel)
        for row, col, score, kept in zip(table.grid_row, table.grid_col, table.score, table.kept, strict=True):
            assert scores[row, col] == pytest.approx(score, nan_ok=True)
            assert np.isnan(status[row, col]) == kept


def test_merged_tokens_point_at_kept_tokens_of_their_image(image_run):
    token_map = image_run.token_map
    (panel,) = data.media_panels(token_map)
    table = data.panel_tokens(token_map, panel)
    merged = table[table.status == "merged"]
    assert len(merged) > 0
    targets = merged.merged_into.to_numpy()
    assert np.asarray(token_map["kept"])[targets].all()
    assert set(targets) <= set(panel.rows.tolist())
    expected_cx = (np.asarray(token_map["x0"])[targets] + np.asarray(token_map["x1"])[targets]) / 2
    np.testing.assert_allclose(merged.target_cx.to_numpy(), expected_cx)


def test_panels_are_the_partitions_image_and_tubelet_units(omni_run, image_run):
    for run in (omni_run, image_run):
        token_map = run.token_map
        units = list(token_map.partition("tubelet").only(VISUAL))
        panels = data.media_panels(token_map)
        assert [panel.unit.label for panel in panels] == [unit.label for unit in units]
        for panel, unit in zip(panels, units, strict=True):
            np.testing.assert_array_equal(np.sort(panel.rows), np.flatnonzero(unit.rows))
            assert panel.label.startswith(unit.label)  # the one label format, then what the picture shows
    video = omni_run.prompt.videos[0]
    last = data.media_panels(omni_run.token_map)[-1]
    first, final = last.frames[0], last.frames[-1]
    assert last.short_label == f"v0 f{first}-{final}" and f"frames {first}-{final}" in last.label
    times = dict(zip(video.frame_indices, video.timestamps(), strict=True))
    assert (last.t0, last.t1) == pytest.approx((times[first], times[final]), abs=1e-6)
    assert data.media_panels(image_run.token_map)[0].short_label == "img 0"


def test_pictures_made_in_threads_are_the_pictures_made_one_by_one(omni_run, monkeypatch):
    """A long video's panel pictures are made in a thread pool (`_prefetch_pictures`); each is the same JPEG as
    `picture` makes alone, and the figure's frames carry them."""
    from omni_lab.widgets import token_reduction

    single = TokenReductionMap(omni_run)
    alone = [single.picture(index) for index in range(len(single.panels))]
    monkeypatch.setattr(token_reduction, "PARALLEL_PICTURES", 2)
    pooled = TokenReductionMap(omni_run)
    pooled._prefetch_pictures()
    assert len(pooled.panels) >= 2 and sorted(pooled._pictures) == list(range(len(pooled.panels)))
    assert [pooled._pictures[index] for index in range(len(pooled.panels))] == alone
    assert all(picture.startswith("data:image/") for picture in alone)
    frames = pooled.figure_for_html()["frames"]
    assert [frame["data"][0]["source"] for frame in frames] == alone


def test_reduction_counts_match_the_ledger(omni_run):
    panels = data.media_panels(omni_run.token_map)
    counts = data.reduction_counts(omni_run.token_map, panels)
    ledger = omni_run.ledger.summary().set_index("modality")
    assert int(counts.tokens.sum()) == int(ledger.loc["video", "tokens"])
    assert int(counts.kept.sum()) == int(ledger.loc["video", "kept"])
    assert int(counts.pruned.sum()) == int(ledger.loc["video", "pruned"])
    assert counts.kept.iloc[0] == counts.tokens.iloc[0]  # EVS keeps the first tubelet whole


def test_reducer_menu_and_slider_ask_the_reducers(omni_run, image_run):
    from omni_lab.reduction.names import REDUCER_NAMES

    classes = {cls.__name__: cls for cls in REDUCER_NAMES.values()}
    video_panels = data.media_panels(omni_run.token_map)
    image_panels = data.media_panels(image_run.token_map)
    assert data.reducer_choices(video_panels) == [n for n, cls in classes.items() if "video" in cls.modalities]
    assert data.reducer_choices(image_panels) == [n for n, cls in classes.items() if "image" in cls.modalities]
    assert "AudioMerge" not in data.reducer_choices(video_panels)  # the map draws no audio
    uniform = ol.reducers.UniformTemporal(4)
    assert data.slider_setting(uniform, video_panels) == ("UniformTemporal", pytest.approx(uniform.rate))
    assert data.make_reducer("UniformTemporal", uniform.rate).keep_every == 4  # the slider's rate round-trips
    assert data.slider_setting(ol.reducers.EVS(0.3), video_panels) == ("EVS", pytest.approx(0.3))
    assert data.slider_setting(ol.reducers.AudioMerge(0.3), video_panels) == ("EVS", pytest.approx(0.3))
    assert data.slider_setting(None, image_panels) == ("DivPrune", pytest.approx(0.5))
    with pytest.raises(OmniLabInputError, match="rate slider"):
        data.make_reducer("FastV", 0.5)


def test_one_palette_for_widgets_and_playground(omni_run):
    from omni_lab.playground import figures as playground_figures
    from omni_lab.widgets import palette, render

    assert palette.STATUS_COLOURS == {"kept": "#2ca02c", "merged": "#1f77b4", "pruned": "#d62728"}
    assert not hasattr(render, "STATUS_COLOURS") and not hasattr(playground_figures, "STATUS_COLOURS")
    bars = TokenReductionMap(omni_run).figure().data[-3:]
    assert {bar.name: bar.marker.color for bar in bars} == palette.STATUS_COLOURS
    counts = playground_figures.token_counts_figure(omni_run)
    assert {bar.name: bar.marker.color for bar in counts.data} == palette.STATUS_COLOURS
    token_map = omni_run.token_map
    modality, kept, merged = token_map["modality"], token_map["kept"], token_map["merged_into"] >= 0
    status = np.where(kept, "kept", np.where(merged, "merged", "pruned"))
    for bar in counts.data:
        expected = [int(((modality == name) & (status == bar.name)).sum()) for name in bar.x]
        assert list(bar.y) == expected, bar.name


# -------------------------------------------------------------------------------------------------- data: routing
def test_routing_loads_sum_to_k_times_layers_times_positions(omni_run):
    routing = omni_run.routing
    layers, positions, k = routing.experts.shape
    names, loads = data.expert_loads(routing)
    assert names == list(routing.layers)
    assert loads["all"].shape == (layers, routing.num_experts)
    assert int(loads["all"].sum()) == k * layers * positions
    np.testing.assert_array_equal(loads["all"].sum(1), np.full(layers, k * positions))
    modality = omni_run.token_map.by_position("modality")[:positions]
    for name, load in loads.items():
        if name != "all":
            assert int(load.sum()) == k * layers * int((modality == name).sum()), name
    np.testing.assert_array_equal(sum(load for name, load in loads.items() if name != "all"), loads["all"])
    experts = routing.experts.numpy()
    for slot in range(layers):  # an independent count straight from the tensor
        np.testing.assert_array_equal(
            loads["all"][slot], np.bincount(experts[slot].reshape(-1), minlength=routing.num_experts)
        )


def test_routing_entropy_has_every_layer_and_group_within_bounds(omni_run):
    routing = omni_run.routing
    table = data.routing_entropy(routing)
    _, loads = data.expert_loads(routing)
    assert set(table.group) == set(loads)
    assert len(table) == len(loads) * len(routing.layers)
    assert (table.entropy_bits >= 0).all() and (table.entropy_bits <= np.log2(routing.num_experts) + 1e-9).all()
    share = loads["all"][0] / loads["all"][0].sum()
    share = share[share > 0]
    expected = float(-(share * np.log2(share)).sum())
    first = table[(table.group == "all") & (table.layer == routing.layers[0])].entropy_bits.item()
    assert first == pytest.approx(expected)


def test_top_expert_strip_unbinned_and_binned(omni_run):
    routing = omni_run.routing
    experts, weights = routing.experts.numpy(), routing.weights.float().numpy()
    top = np.take_along_axis(experts, weights.argmax(-1)[..., None], -1)[..., 0]
    strip = data.top_expert_strip(routing, max_columns=10_000)
    assert not strip.binned
    np.testing.assert_array_equal(strip.expert, top)
    binned = data.top_expert_strip(routing, max_columns=7)
    assert binned.binned and binned.expert.shape == (len(routing.layers), 7)
    assert binned.start[0] == 0 and binned.stop[-1] == experts.shape[1]
    np.testing.assert_array_equal(binned.start[1:], binned.stop[:-1])
    for slot in range(len(routing.layers)):
        for column in range(7):
            chosen = top[slot, binned.start[column] : binned.stop[column]]
            counts = np.bincount(chosen, minlength=routing.num_experts)
            assert binned.expert[slot, column] == counts.argmax()
            assert binned.share[slot, column] == pytest.approx(counts.max() / len(chosen))


def test_token_routing_is_the_positions_choice_at_every_layer(omni_run):
    routing = omni_run.routing
    position = int(omni_run.token_map.answer_positions(routing.experts.shape[1])[0])
    table = routing.for_token(position)
    assert len(table) == routing.experts.shape[0] * routing.experts.shape[2]
    np.testing.assert_array_equal(table.expert.to_numpy(), routing.experts[:, position].reshape(-1).numpy())
    assert "generated" in data.position_label(omni_run.token_map, position)


# --------------------------------------------------------------------------------------------------- data: masses
@pytest.mark.parametrize("query", ["answer", "all", 3])
def test_masses_per_query_sum_to_one(omni_run, query):
    table = data.modality_mass(omni_run, query)
    entries = combine_in_layer_order(omni_run.attention_mass, omni_run.mamba_mass)
    assert table.layer.drop_duplicates().tolist() == sorted(layer for layer, _, _ in entries)
    np.testing.assert_allclose(table.groupby("layer").mass.sum().to_numpy(), 1.0, atol=1e-4)
    for layer, _, _ in entries:
        heads, names = data.head_mass(omni_run, layer, query)
        np.testing.assert_allclose(heads.sum(1), 1.0, atol=1e-4)
        segments = data.segment_mass(omni_run, layer, query)
        assert segments.mass.sum() == pytest.approx(1.0, abs=1e-4)
        assert set(names) <= set(data.mass_modalities(omni_run))


def test_answer_query_averages_the_answers_rows(omni_run):
    mass = omni_run.attention_mass
    layer = mass.layers[0]
    rows, label = mass.query_rows("answer")
    generated = set(omni_run.token_map.answer_positions().tolist())
    assert [mass.queries[row] for row in rows] == [q for q in mass.queries if q in generated]
    assert "answer" in label
    expected = mass.by_modality()[layer].float().numpy()[:, rows].mean(axis=(0, 1))
    table = data.modality_mass(omni_run, "answer")
    mine = table[table.layer == layer].set_index("modality").mass
    for name, value in zip(mass.modalities, expected, strict=True):
        assert mine[name] == pytest.approx(float(value), abs=1e-6)


def test_query_and_layer_errors_name_the_input(omni_run):
    with pytest.raises(OmniLabInputError, match="query"):
        omni_run.attention_mass.query_rows("nobody")
    with pytest.raises(OmniLabInputError, match="no query row"):
        omni_run.attention_mass.query_rows([10_000])
    with pytest.raises(OmniLabInputError, match="no captured mass"):
        data.head_mass(omni_run, 1)  # layer 1 is a MoE layer


def test_grouped_answer_query_and_audio_windows(audio_run):
    mass = audio_run.mamba_mass
    rows, _ = mass.query_rows("answer")
    assert [mass.queries[row] for row in rows] == ["answer"]
    table = data.audio_mass(audio_run, 0)
    windows = mass.segments[(mass.segments.modality == "audio")]
    assert set(table.kind) == {"attention", "mamba"}
    assert len(table) == 2 * len(windows)
    clip_end = float(data.audio_tokens(audio_run.token_map, 0).t1.max())
    assert ((table.t0 < table.t1) & (table.t1 <= clip_end + 1e-9) & (table.mass >= 0)).all()
    spans = table[table.kind == "mamba"].sort_values("t0")
    np.testing.assert_allclose(spans.t0.to_numpy(), 0.5 * np.arange(len(spans)))  # the captured 0.5 s windows


def test_audio_mass_of_item_segments_spans_the_clip(omni_run):
    table = data.audio_mass(omni_run, 0)  # captured with the default per-item segments
    tokens = data.audio_tokens(omni_run.token_map, 0)
    assert sorted(table.kind) == ["attention", "mamba"] and set(table.label) == {"audio 0"}
    np.testing.assert_allclose(table.t0.to_numpy(), float(tokens.t0.min()))
    np.testing.assert_allclose(table.t1.to_numpy(), float(tokens.t1.max()))


def test_query_menu_follows_the_capture(omni_run, audio_run):
    per_position = data.query_choices(omni_run.attention_mass)
    answer = [int(p) for p in omni_run.token_map.answer_positions() if p in set(omni_run.attention_mass.queries)]
    assert [value for _, value in per_position] == ["answer", *answer, "all"]
    grouped = data.query_choices(audio_run.attention_mass)
    assert [value for _, value in grouped] == ["answer", "all"]  # the group "answer" is the answer itself
    assert grouped[0][0] == "answer tokens"


# ---------------------------------------------------------------------------------------------------- data: audio
def test_audio_tokens_waveform_and_mel(audio_run):
    prompt, token_map = audio_run.prompt, audio_run.token_map
    clip = prompt.audios[0]
    tokens = data.audio_tokens(token_map, 0)
    assert len(tokens) == int(token_map.rows(modality="audio", item=0).sum())
    np.testing.assert_allclose(tokens.t0.to_numpy(), np.arange(len(tokens)) * 0.08, atol=1e-9)
    assert tokens.t1.max() == pytest.approx(clip.seconds)
    envelope = data.audio_waveform(prompt, 0, max_points=500)
    assert len(envelope) == 500 and (envelope.low <= envelope.high).all()
    assert envelope.high.max() == pytest.approx(float(clip.waveform.max()))
    assert envelope.t.max() < clip.seconds
    features = prompt.inputs["input_features"][0].float().numpy()  # (frames, mel bins), the encoder's input
    mask = prompt.inputs.get("input_features_mask")
    if mask is not None:
        features = features[mask[0].numpy().astype(bool)]
    times, mel = data.audio_mel(prompt, 0, max_columns=100_000)
    np.testing.assert_array_equal(mel, features.T)
    np.testing.assert_allclose(times, np.arange(len(features)) * 0.01)
    times, mel = data.audio_mel(prompt, 0, max_columns=50)
    assert mel.shape == (features.shape[1], 50) and times.shape == (50,)
    first = int(round(times[1] / 0.01))
    np.testing.assert_allclose(mel[:, 0], features[:first].mean(0), rtol=1e-5, atol=1e-6)
    spans = data.pruned_spans(tokens)
    dropped = tokens[~tokens.kept]
    assert len(dropped) > 0
    assert sum(t1 - t0 for t0, t1 in spans) == pytest.approx(float((dropped.t1 - dropped.t0).sum()))


def test_attribution_scores_protocol(omni_run):
    token_map = omni_run.token_map
    scores = np.arange(len(token_map), dtype=np.float64)

    class Result:
        pass

    result = Result()
    result.token_map, result.scores, result.method, result.target = token_map, scores, "FeatureAblation", "'2'"
    read = data.attribution_scores(result, media=omni_run)
    assert read.method == "FeatureAblation" and read.media is omni_run
    np.testing.assert_array_equal(read.scores, scores)
    np.testing.assert_array_equal(data.attribution_scores((token_map, scores)).scores, scores)
    with pytest.raises(OmniLabInputError, match="one score per token-map row"):
        data.attribution_scores((token_map, scores[:-1]))
    with pytest.raises(OmniLabInputError, match="token_map"):
        data.attribution_scores(object())
    text = data.text_scores(token_map, scores)
    assert set(text.modality) == {"text", "generated"}
    np.testing.assert_array_equal(text.score.to_numpy(), text.row.to_numpy())


def test_data_layer_and_package_import_no_plotly():
    code = (
        "import sys, omni_lab, omni_lab.widgets, omni_lab.widgets.data; "
        "bad = [m for m in ('plotly', 'ipywidgets', 'gradio') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -------------------------------------------------------------------------------------------------------- figures
def _axis_titles(fig) -> set[str]:
    layout = fig.layout.to_plotly_json()
    return {
        value["title"]["text"]
        for key, value in layout.items()
        if key.startswith(("xaxis", "yaxis")) and isinstance(value, dict) and value.get("title", {}).get("text")
    }


def test_token_reduction_figure_draws_every_token_once(omni_run):
    view = TokenReductionMap(omni_run)
    fig = view.figure()
    assert isinstance(fig, go.Figure)
    assert [trace.type for trace in fig.data] == [
        "image", "heatmap", "scatter", "scatter", "scatter", "scatter", "heatmap", "scatter", "bar", "bar", "bar"
    ]  # fmt: skip
    assert {"x (pixels)", "y (pixels)", "grid column", "grid row", "image / tubelet", "tokens"} <= _axis_titles(fig)
    panels = data.media_panels(omni_run.token_map)
    assert len(fig.frames) == len(panels) == len(fig.layout.sliders[0].steps)
    drawn = {status: 0 for status in STATUSES}
    for frame in fig.frames:
        for trace in frame.data[2:5]:
            drawn[trace.name] += len(trace.x)
        assert frame.data[0].source.startswith("data:image/")  # the pixels travel inline
    counts = omni_run.token_map.counts(kept=True)
    video_tokens = omni_run.token_map.counts()["video"]
    assert drawn["kept"] == counts["video"]
    assert drawn["kept"] + drawn["merged"] + drawn["pruned"] == video_tokens
    assert [bar.name for bar in fig.data[-3:]] == list(STATUSES)
    assert int(sum(np.asarray(bar.y).sum() for bar in fig.data[-3:])) == video_tokens


def test_token_reduction_figure_links_merged_tokens(image_run):
    fig = TokenReductionMap(image_run).figure()
    merged = fig.frames[0].data[3]
    links = fig.frames[0].data[5]
    expected = int(
        ((~np.asarray(image_run.token_map["kept"])) & (np.asarray(image_run.token_map["merged_into"]) >= 0)).sum()
    )
    assert merged.name == "merged" and len(merged.x) == expected > 0
    assert len(links.x) == 3 * expected  # start, target, gap per merged token


def test_expert_routing_figure(omni_run):
    view = ExpertRoutingView(omni_run)
    fig = view.figure()
    types = [trace.type for trace in fig.data]
    assert types[0] == "heatmap" and types[-3:] == ["heatmap", "heatmap", "scatter"]
    assert {"expert", "MoE layer", "entropy (bits)", "LLM position"} <= _axis_titles(fig)
    share = np.asarray(fig.data[0].z)
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-5)
    menu_labels = [button.label for button in fig.layout.updatemenus[0].buttons]
    assert menu_labels == list(data.expert_loads(omni_run.routing)[1])
    strip = fig.data[-2]
    assert np.asarray(strip.z).shape == (len(omni_run.routing.layers), omni_run.routing.experts.shape[1])
    detail = fig.data[-1]
    assert len(detail.x) == omni_run.routing.experts.shape[0] * omni_run.routing.experts.shape[2]


def test_modality_attention_figure(omni_run):
    view = ModalityAttentionView(omni_run)
    fig = view.figure()
    modalities = data.mass_modalities(omni_run)
    bars = [trace for trace in fig.data if trace.type == "bar" and trace.name in modalities]
    assert [bar.name for bar in bars] == modalities
    np.testing.assert_allclose(np.sum([np.asarray(bar.y) for bar in bars], axis=0), 1.0, atol=1e-4)
    entries = combine_in_layer_order(omni_run.attention_mass, omni_run.mamba_mass)
    assert list(bars[0].x) == [f"{layer} {'attn' if kind == 'attention' else 'mamba'}" for layer, kind, _ in entries]
    assert [layer for layer, _, _ in entries] == sorted(omni_run.attention_mass.layers + omni_run.mamba_mass.layers)
    assert len(fig.layout.sliders[0].steps) == len(entries)
    assert len(fig.layout.shapes) == len(omni_run.attention_mass.layers)  # attention layers shaded
    assert {"share of mass", "head", "segment", "modality"} <= _axis_titles(fig)
    assert [trace.type for trace in fig.data[len(modalities) :]] == ["scatter", "heatmap", "bar"]


def test_audio_timeline_figure(audio_run):
    fig = AudioTimeline(audio_run).figure()
    types = [trace.type for trace in fig.data]
    assert types[:4] == ["scatter", "scatter", "heatmap", "scatter"]
    token_bars = [trace for trace in fig.data if trace.type == "bar" and trace.name in STATUSES]
    tokens = data.audio_tokens(audio_run.token_map, 0)
    assert sum(len(bar.x) for bar in token_bars) == len(tokens)
    for bar in token_bars:
        assert len(bar.x) == int((tokens.status == bar.name).sum())
    mass = [trace for trace in fig.data if trace.name in ("attention mass", "mamba mass")]
    assert len(mass) == 2
    assert {"amplitude", "mel bin", "time (s)", "share of mass"} <= _axis_titles(fig)


def test_attribution_overlay_figure(omni_run):
    token_map = omni_run.token_map
    scores = np.where(np.asarray(token_map["special"]) & (np.asarray(token_map["modality"]) == "text"), np.nan, 1.0)
    scores = scores * np.linspace(-2, 1, len(token_map))
    view = AttributionOverlay((token_map, scores), media=omni_run)
    fig = view.figure()
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax == pytest.approx(-np.nanmax(np.abs(scores)))
    panels = data.media_panels(token_map)
    assert len(fig.frames) == len(panels)
    for frame, panel in zip(fig.frames, panels, strict=True):
        z = np.asarray(frame.data[1].z, dtype=float)
        assert z.size == len(panel.rows)
        np.testing.assert_allclose(np.sort(z.reshape(-1)), np.sort(scores[panel.rows]))
    audio = [trace for trace in fig.data if trace.type == "bar"]
    assert sum(len(trace.x) for trace in audio) == int(token_map.rows(modality="audio").sum())
    text = fig.data[-1]
    assert int(np.isfinite(np.asarray(text.z, dtype=float)).sum()) == int(
        np.isfinite(scores[np.isin(np.asarray(token_map["modality"]), ["text", "generated"])]).sum()
    )
    assert {"x (pixels)", "y (pixels)", "time (s)", "score", "line"} <= _axis_titles(fig)


def with_inflated_scripts(text: str) -> str:
    """A saved page's text followed by every figure script it ships compressed, inflated as the browser does."""
    import base64
    import gzip
    import re

    packed = re.findall(r'omniLabRun\("([A-Za-z0-9+/=]+)", true\)', text)
    return text + "".join(gzip.decompress(base64.b64decode(item)).decode("utf-8") for item in packed)


def test_dashboard_sections_and_self_contained_html(omni_run, twin_lab, tmp_path):
    dashboard = Dashboard(omni_run, twin_lab)
    assert list(dashboard.views) == ["Token reduction", "Expert routing", "Modality mass", "Audio"]
    summary = dashboard.figure()
    assert isinstance(summary, go.Figure) and summary.data[0].type == "table"
    path = dashboard.save_html(tmp_path / "run.html")
    text = path.read_text(encoding="utf-8")
    assert with_inflated_scripts(text).count("Plotly.newPlot") == 1 + len(dashboard.views)
    assert text.count("plotly.js v") == 1, "plotly.js must be inlined exactly once"
    assert "<script src=" not in text and "cdn.plot.ly/plotly" not in text


def test_views_refuse_runs_without_what_they_draw(twin_lab):
    run = twin_lab.run(twin_lab.prompt("hello"), max_new_tokens=1)
    with pytest.raises(OmniLabInputError, match="image or a video"):
        TokenReductionMap(run)
    with pytest.raises(OmniLabInputError, match="routing"):
        ExpertRoutingView(run)
    with pytest.raises(OmniLabInputError, match="attention_mass"):
        ModalityAttentionView(run)
    with pytest.raises(OmniLabInputError, match="audio clip 0"):
        AudioTimeline(run)
    assert list(Dashboard(run).views) == []


# --------------------------------------------------------------------------------------------------- live widgets
def test_mimebundle_carries_the_widget_and_a_self_contained_html_fallback(omni_run):
    bundle = ExpertRoutingView(omni_run)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Plotly.newPlot" in bundle["text/html"] and "<script src=" not in bundle["text/html"]


def test_rate_slider_reruns_only_the_reducer_like_a_fresh_run(omni_run, twin_lab):
    view = TokenReductionMap(omni_run, twin_lab)
    widget = view.widget()
    figure_widget = view._figure_widget
    assert widget.children[-1] is figure_widget
    view.show_panel(-1)
    view._reducer_choice.value = "EVS"
    view._rate_slider.value = 0.8  # the control a user moves
    assert repr(view.reducer) == "EVS(rate=0.8)"
    fresh = twin_lab.run(omni_run.prompt, max_new_tokens=1, reducer=ol.reducers.EVS(0.8))
    rows = _media_rows(fresh.token_map)
    np.testing.assert_array_equal(np.asarray(view.token_map["kept"])[rows], np.asarray(fresh.token_map["kept"])[rows])
    panel = view.panels[-1]
    expected = int(np.asarray(fresh.token_map["kept"])[panel.rows].sum())
    kept_trace = next(trace for trace in figure_widget.data if trace.name == "kept" and trace.type == "scatter")
    assert len(kept_trace.x) == expected
    bars = [trace for trace in figure_widget.data if trace.type == "bar"]
    assert int(np.asarray(bars[0].y).sum()) == int(fresh.ledger.summary().set_index("modality").loc["video", "kept"])
    assert view.last_update_s is not None and f"{expected}" in figure_widget.layout.title.text
    with pytest.raises(OmniLabInputError, match="panel"):
        view.show_panel(99)
    with pytest.raises(OmniLabInputError, match="needs the Lab"):
        TokenReductionMap(omni_run).set_reducer(ol.reducers.EVS(0.2))


def test_routing_and_attention_widgets_follow_their_controls(omni_run):
    routing = ExpertRoutingView(omni_run)
    routing.widget()
    routing.show_group("video")
    _, loads = data.expert_loads(omni_run.routing)
    video = loads["video"] / loads["video"].sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(routing._figure_widget.data[0].z), video, rtol=1e-5)
    routing.select_token(4)
    np.testing.assert_array_equal(
        np.asarray(routing._figure_widget.data[-1].y), omni_run.routing.experts[:, 4].reshape(-1)
    )
    attention = ModalityAttentionView(omni_run)
    attention.widget()
    layer = omni_run.attention_mass.layers[-1]
    attention.select_layer(layer)
    heads, _ = data.head_mass(omni_run, layer)
    assert np.asarray(attention._figure_widget.data[len(attention.modalities) + 1].z).shape[0] == heads.shape[0]
    attention.set_query("all")
    table = data.modality_mass(omni_run, "all")
    first = table[table.modality == attention.modalities[0]].sort_values("order").mass.to_numpy()
    np.testing.assert_allclose(np.asarray(attention._figure_widget.data[0].y), first, rtol=1e-5)
    assert isinstance(pd.DataFrame(attention.table()), pd.DataFrame)


@pytest.mark.slow
def test_attribution_overlay_draws_an_occlusion_attribution(omni_run, twin_lab):
    pytest.importorskip("captum")
    attribution = ol.attribution.occlusion(twin_lab, omni_run.prompt, unit="tubelet", progress=False)
    view = AttributionOverlay(attribution, media=omni_run.prompt)
    assert view.label() == f"occlusion → {attribution.target}"
    fig = view.figure()
    panels = data.media_panels(attribution.token_map)
    for frame, panel in zip(fig.frames, panels, strict=True):
        z = np.asarray(frame.data[1].z, dtype=float).reshape(-1)
        np.testing.assert_array_equal(z, attribution.scores[panel.rows].astype(np.float32))
        assert np.isfinite(z).all()  # a tubelet unit scores every token of its tubelet
    finite = np.abs(attribution.scores[np.isfinite(attribution.scores)])
    assert fig.layout.coloraxis.cmax == pytest.approx(finite.max())


def test_logit_lens_view_stacks_the_direct_logits_and_draws_the_rank(twin_lab):
    from omni_lab.toy import shapesworld as sw
    from omni_lab.widgets import LogitLensView

    example = sw.sample(sw.eval_seed(0, "omni", 3), "omni")
    result = ol.studies.direct_logit_attribution(twin_lab, example.prompt(twin_lab), example.answer, reducer=None)
    for by in ("kind", "group"):
        figure = LogitLensView(result, by=by).figure()
        bars = [trace for trace in figure.data if trace.type == "bar"]
        stacked = np.sum([np.asarray(trace.y, dtype=float) for trace in bars], axis=0)
        assert stacked.sum() == pytest.approx(result.target_logit, abs=1e-3)  # the bars add up to the logit
        rank = next(trace for trace in figure.data if trace.type == "scatter")
        assert list(rank.y) == result.lens["rank"].tolist() and len(rank.x) == len(result.lens)
    names = {trace.name for trace in LogitLensView(result, by="kind").figure().data if trace.type == "bar"}
    assert {"attention", "mamba", "routed experts", "shared expert", "embedding"} <= names


def test_expert_routing_coactivation_figure_counts_from_the_top_k(omni_run):
    from omni_lab.widgets import ExpertRoutingView
    from omni_lab.widgets.routing_data import coactivation_matrices

    routing = omni_run.routing
    layers, matrices = coactivation_matrices(routing)
    experts = routing.experts.numpy()
    for slot in range(len(layers)):
        expected = np.zeros((routing.num_experts, routing.num_experts), dtype=np.int64)
        for chosen in experts[slot]:
            for a in chosen:
                for b in chosen:
                    expected[a, b] += 1
        assert np.array_equal(matrices[slot], expected)  # pairs off the diagonal, each expert's picks on it
    figure = ExpertRoutingView(omni_run).coactivation_figure(top=3)
    assert figure.data[0].type == "heatmap" and np.array_equal(np.asarray(figure.data[0].z), matrices[0])
    assert len(figure.layout.updatemenus[0].buttons) == len(layers)
