"""The playground's compare mode and "Download": `compare.compare` called directly on the toy twin, `/compare` over
HTTP with gradio_client, and the exported JSON's provenance against hashes and versions recomputed here."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

import omni_lab as ol  # noqa: E402
from omni_lab.playground import compare, export, handlers  # noqa: E402
from omni_lab.playground.examples import load_examples  # noqa: E402
from tests.browser_support import free_port  # noqa: E402

EXAMPLES = {example.name: example for example in load_examples()}
OMNI = EXAMPLES["omni-count-and-direction"]  # 13 frames at 8 fps and beeps


@pytest.fixture(scope="module")
def settings(twin_lab):
    return handlers.default_settings(twin_lab, time_limit_s=900.0)  # two arms on a shared 2-core machine


@pytest.fixture(scope="module")
def omni_prompt(twin_lab, settings):
    return handlers.build_prompt(twin_lab, settings, OMNI.question, **OMNI.media())


@pytest.fixture(scope="module")
def default_pair(twin_lab, settings):
    """Every tuple `compare.compare` yields for the omni example with the default arms (EVS 0.7 against RandomDrop
    at EVS's budget)."""
    return list(compare.compare(twin_lab, settings, OMNI.question, **OMNI.media()))


def _direct_mass(run):
    from omni_lab.widgets.attention_data import modality_mass

    return modality_mass(run).set_index(["order", "layer", "kind", "modality"]).mass


def test_each_arm_answers_as_lab_run_and_the_routing_shift_is_routing_shift(twin_lab, omni_prompt, default_pair):
    from omni_lab import reducers

    *_, (answer_a, answer_b, table, comparison_json, map_a, map_b, shift, mass, kept) = default_pair
    evs = reducers.EVS(0.7)
    control = reducers.RandomDrop.matching(evs, seed=0)
    capture = handlers.captures(evs)
    runs = [twin_lab.run(omni_prompt, max_new_tokens=16, reducer=r, capture=capture) for r in (evs, control)]
    assert [answer_a, answer_b] == [run.answer for run in runs] == [OMNI.answer, OMNI.answer]
    assert [arm.run.generated_ids for arm in kept.arms] == [run.generated_ids for run in runs]
    assert [arm["label"] for arm in comparison_json["arms"]] == ["EVS 0.7", "random for EVS 0.7"]
    assert [arm["reducers"] for arm in comparison_json["arms"]] == [{"video": repr(evs)}, {"video": repr(control)}]
    # equal budgets: both arms keep EVS's share of the 7 two-frame tubelets of 16 tokens, all 44 audio tokens
    after = [arm["tokens_after"] for arm in comparison_json["arms"]]
    assert after[0] == after[1] and after[0]["video"] == int(7 * 16 * (1 - 0.7)) and after[0]["audio"] == 44
    for arm in comparison_json["arms"]:
        assert 0 < arm["timings"]["first_token_s"] <= arm["timings"]["request_s"] and arm["timings"]["prefill_s"] > 0
    # the routing shift: ol.studies.routing_shift of each arm's reducer, computed here from scratch
    for name, reducer in (("A", evs), ("B", control)):
        direct = ol.studies.routing_shift(twin_lab, omni_prompt, reducer, progress=False)
        mine = kept.routing_shift[kept.routing_shift.arm == name].drop(columns=["arm", "label"])
        assert mine.reset_index(drop=True).equals(direct)
        rows = [row for row in comparison_json["routing_shift"]["rows"] if row["arm"] == name]
        assert [row["share_changed"] for row in rows] == direct.share_changed.tolist()
    # the mass difference: B - A of the answer's mass in the two runs made here
    difference = (_direct_mass(runs[1]) - _direct_mass(runs[0])).to_numpy()
    np.testing.assert_allclose(kept.mass_difference.difference.to_numpy(), difference, atol=1e-6)
    assert len(comparison_json["modality_mass_difference"]["b_minus_a"]) == len(difference)
    # the table and the figures
    assert list(table.columns) == ["", "A: EVS 0.7", "B: random for EVS 0.7"]
    rows = {row[0]: row[1:] for row in table.to_numpy().tolist()}
    assert rows["answer"] == [OMNI.answer, OMNI.answer] and rows["media tokens after"] == ["video 33, audio 44"] * 2
    assert map_a.layout.title.text.startswith("A (EVS 0.7): Token reduction map") and map_b.data
    assert {trace.name for trace in shift.data} >= {"A · EVS 0.7", "B · random for EVS 0.7"}
    assert mass.data[0].type == "heatmap" and mass.data[0].zmid == 0
    json.dumps(comparison_json)  # what /compare returns is JSON


def test_arm_a_streams_then_arm_b(default_pair):
    skip = gr.skip()
    first, *streamed, last = default_pair
    assert first[:2] == ("", "") and first[3:] == ({}, None, None, None, None, None)
    phase_a = [output[0] for output in streamed if output[1] == skip]
    phase_b = [output[1] for output in streamed if output[0] == skip]
    assert len(phase_a) + len(phase_b) == len(streamed)
    assert streamed.index(next(o for o in streamed if o[0] == skip)) == len(phase_a)  # every A before any B
    kept = last[-1]
    assert len(phase_a) == len(kept.arms[0].run.generated_ids) and len(phase_b) == len(kept.arms[1].run.generated_ids)
    assert phase_a[-1].strip() == last[0] and phase_b[-1].strip() == last[1]
    assert all(output[2:] == (skip,) * 7 for output in streamed)


def test_no_reduction_against_evs_uses_the_unreduced_arm_as_the_routing_reference(twin_lab, settings, omni_prompt):
    from omni_lab import reducers

    *_, last = compare.compare(
        twin_lab, settings, OMNI.question, **OMNI.media(), reducer_a="none", reducer_b="evs", rate_b=0.5
    )
    kept = last[-1]
    unreduced, evs = kept.arms
    assert (
        unreduced.plan.label == "no reduction" and unreduced.stats["tokens_after"] == unreduced.stats["tokens_before"]
    )
    shift_a = kept.routing_shift[kept.routing_shift.arm == "A"]
    assert shift_a.changed.sum() == 0 and (shift_a.compared > 0).all()  # the unreduced arm against itself
    direct = ol.studies.routing_shift(twin_lab, omni_prompt, reducers.EVS(0.5), progress=False)
    mine = kept.routing_shift[kept.routing_shift.arm == "B"].drop(columns=["arm", "label"]).reset_index(drop=True)
    assert mine.equals(direct)
    assert evs.run.answer == twin_lab.run(omni_prompt, max_new_tokens=16, reducer=reducers.EVS(0.5)).answer


def test_an_arm_inside_the_llm_answers_as_the_lab_does_and_its_panels_say_why_when_empty(
    twin_lab, settings, omni_prompt
):
    from omni_lab import reducers

    *_, last = compare.compare(
        twin_lab, settings, OMNI.question, **OMNI.media(), reducer_a="none", reducer_b="pyramiddrop", rate_b=0.5
    )
    answer_b, comparison_json, shift, mass, kept = last[1], last[3], last[6], last[7], last[-1]
    expected = twin_lab.run(omni_prompt, max_new_tokens=16, reducer=reducers.at_rate("pyramiddrop", 0.5))
    assert answer_b == expected.answer
    arm = kept.arms[1]
    if arm.run.routing is None:  # captures cannot follow the in-LLM drop: the panels and the JSON say so
        assert "inside the LLM" in comparison_json["routing_shift"]["unavailable"]
        assert "inside the LLM" in comparison_json["modality_mass_difference"]["unavailable"]
        assert not mass.data and "inside the LLM" in mass.layout.annotations[0].text
        assert "inside the LLM" in shift.layout.title.text  # arm A's shift is drawn, B's absence explained
    else:  # captures follow the shrinking sequence: the shift is routing_shift's
        direct = ol.studies.routing_shift(twin_lab, omni_prompt, reducers.at_rate("pyramiddrop", 0.5), progress=False)
        mine = kept.routing_shift[kept.routing_shift.arm == "B"].drop(columns=["arm", "label"])
        assert mine.reset_index(drop=True).equals(direct)


@pytest.mark.parametrize(
    "arms,message",
    [
        ({"reducer_a": compare.MATCHED}, "arm A cannot be 'random-matched'"),
        ({"reducer_a": "none"}, "arm A (no reduction) drops nothing"),
        ({"reducer_a": "pyramiddrop", "rate_a": 0.5}, "acts inside the LLM"),
        ({"reducer_b": "fastv"}, "arm B: reducer 'fastv' is not one of"),
        ({"reducer_a": "evs", "rate_a": 1.2}, "arm A: rate is the fraction of tokens to drop"),
        ({"max_new_tokens": 0}, "max_new_tokens must be between 1 and 64"),
    ],
)
def test_bad_arms_are_named_gradio_errors(twin_lab, settings, arms, message):
    with pytest.raises(gr.Error) as caught:
        list(compare.compare(twin_lab, settings, "What number comes after 3?", **arms))
    assert message in caught.value.message


# ------------------------------------------------------------------------------------------------------- export
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_exported_json_holds_the_run_its_file_hashes_and_versions(twin_lab, default_pair, tmp_path):
    import torch
    import transformers

    kept = default_pair[-1][-1]
    html_path, json_path = export.export_comparison(twin_lab, kept, tmp_path)
    record = json.loads(json_path.read_text())
    versions = record["provenance"]["versions"]
    assert versions["omni_lab"] == ol.__version__ and versions["transformers"] == transformers.__version__
    assert versions["torch"] == torch.__version__
    model = record["provenance"]["model"]
    checkpoint = Path(model["path"])
    assert model["source"] == "toy" and checkpoint == ol.sources.TOY_DIR.resolve()
    on_disk = sorted(p.name for p in checkpoint.iterdir() if p.is_file())
    assert [entry["name"] for entry in model["files"]] == on_disk
    assert {entry["name"]: entry["sha256"] for entry in model["files"]} == {n: _sha256(checkpoint / n) for n in on_disk}
    for entry, arm in zip(record["arms"], kept.arms, strict=True):
        assert entry["generated_ids"] == arm.run.generated_ids and entry["answer"] == OMNI.answer
        assert entry["provenance"]["reducers"] == {"video": repr(arm.plan.reducer)}
        assert entry["provenance"]["options"]["max_new_tokens"] == 16
        assert entry["provenance"]["prompt"]["text"] == OMNI.question
    page = html_path.read_text()
    assert page.count("* plotly.js v") == 1  # plotly.js inline, once (the browser test opens it offline)
    assert OMNI.answer in page and "random for EVS 0.7" in page and "Routing shift" in page


def test_a_run_exports_its_to_dict_with_playground_timings(twin_lab, settings, tmp_path):
    example = EXAMPLES["image-colour"]
    kept = []
    outputs = list(
        handlers.ask(twin_lab, settings, example.question, image=example.image, on_run=lambda *k: kept.append(k))
    )
    run, stats = kept[0]
    assert outputs[-1][0] == run.answer == example.answer
    html_path, json_path = export.export_run(twin_lab, run, stats, tmp_path)
    record = json.loads(json_path.read_text())
    assert {key: value for key, value in record.items() if key not in ("timings", "provenance")} == {
        key: value for key, value in json.loads(json.dumps(run.to_dict())).items() if key != "timings"
    }
    assert record["timings"]["first_token_s"] == stats["timings"]["first_token_s"]
    assert record["provenance"]["run"]["reducers"] == {"video": "EVS(rate=0.7)"}
    digest = hashlib.sha256()
    for key in sorted(run.prompt.inputs):
        tensor = run.prompt.inputs[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode() + tensor.numpy().tobytes())
    assert record["provenance"]["run"]["inputs_sha256"] == digest.hexdigest()
    assert example.answer in html_path.read_text()


def test_a_random_preset_records_the_hash_of_its_weights(toy_lab):
    from omni_lab.provenance import provenance

    model = provenance(toy_lab)["model"]
    digest = hashlib.sha256()
    for name, tensor in sorted(toy_lab.model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode() + tensor.contiguous().numpy().tobytes())
    assert model["kind"] == "preset" and model["preset"] == "toy" and model["weights_sha256"] == digest.hexdigest()


# -------------------------------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def server(twin_lab):
    from omni_lab.playground import launch

    app, url = launch(twin_lab, port=free_port(), block=False, quiet=True)
    try:
        yield url
    finally:
        app.close()


def test_compare_over_http_streams_both_arms_and_returns_the_json_and_figures(server, default_pair):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) >= {"/ask", "/compare"} and len(endpoints["/compare"]["returns"]) == 8
    assert len(endpoints["/ask"]["returns"]) == 5  # the session state kept for Download is not part of the API
    files = [None, handle_file(OMNI.video), handle_file(OMNI.audio)]
    job = client.submit(OMNI.question, *files, "evs", 0.7, compare.MATCHED, 0.7, 16, api_name="/compare")
    seen = [output[:2] for output in job]  # a skipped output arrives as {"__type__": "update"}
    answer_a, answer_b, table, comparison_json, *figures = job.result()
    assert (answer_a, answer_b) == (OMNI.answer, OMNI.answer) and len(figures) == 4
    local = default_pair[-1][3]
    assert [arm["generated_ids"] for arm in comparison_json["arms"]] == [arm["generated_ids"] for arm in local["arms"]]
    assert comparison_json["routing_shift"]["rows"] == local["routing_shift"]["rows"]
    assert table["headers"] == ["", "A: EVS 0.7", "B: random for EVS 0.7"]
    streamed_a = [i for i, (a, b) in enumerate(seen) if isinstance(a, str) and a and isinstance(b, dict)]
    streamed_b = [i for i, (a, b) in enumerate(seen) if isinstance(b, str) and b and isinstance(a, dict)]
    assert streamed_a and streamed_b and max(streamed_a) < min(streamed_b)  # A streamed, then B
    assert seen[streamed_a[-1]][0].strip() == answer_a and seen[streamed_b[-1]][1].strip() == answer_b
    answer, stats, *_ = client.predict(OMNI.question, *files, "model", 0.5, 16, api_name="/ask")
    assert answer == OMNI.answer and stats["tokens_after"] == local["arms"][0]["tokens_after"]


def test_download_before_any_answer_says_what_to_do(twin_lab):
    for download in (export.download_run, export.download_comparison):
        with pytest.raises(gr.Error, match="Download writes this tab's last complete"):
            download(twin_lab, None)
