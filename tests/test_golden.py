"""The toy twin still does exactly what the stored golden says, on the stored inputs (tests/golden/).

Five ShapesWorld examples (image, video, audio, video + audio, text) are stored with their exact media; each is run
through the public API (`lab.run(prompt, max_new_tokens=3, return_logits=True, capture=["routing"],
reducer=None)`) and compared with what was stored when the golden was made (tests/golden/make_golden.py regenerates
it; tests/golden/store.py documents the files). A transformers upgrade inside the allowed range that changes
behaviour fails here, naming what moved: the example, the sequence position or step, the MoE layer and the experts,
the largest logit change.

Tolerances (float noise only):
- logits: max |Δ| <= LOGIT_ATOL = 1e-4 per logit (float32; the toy's logits are O(10), so ~1e-5 relative; one and
  two threads differ by 3e-6, while a changed norm, router or kernel moves them by 1e-3 or more);
- token ids of the sequence the LLM saw and of the answer: exact (every stored step has a best-vs-runner-up logit
  gap >= 0.5, so float noise cannot flip a token);
- routing: the chosen expert set at every MoE layer and position is exact, except where the stored selection margin
  (k-th chosen minus best unchosen selection score) is below ROUTING_TIE = 1e-5, a tie float noise may break.
"""

import json

import numpy as np
import pytest

from tests.golden import store

LOGIT_ATOL = 1e-4
ROUTING_TIE = 1e-5
NAMES = ("image", "video", "audio", "video_audio", "text")
SIZE_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def golden():
    """(stored inputs by name, stored outputs by name, examples.json)."""
    inputs = {example.name: example for example in store.load_inputs()}
    return inputs, store.load_outputs(), json.loads(store.EXAMPLES.read_text())


def test_golden_files_hold_every_example_with_its_exact_inputs(golden):
    inputs, outputs, summary = golden
    assert tuple(inputs) == NAMES and tuple(outputs) == NAMES
    for name, example in inputs.items():
        assert example.media_sha256() == summary["examples"][name]["media_sha256"], (
            f"golden input '{name}' changed without regenerating its outputs (python tests/golden/make_golden.py)"
        )
        assert set(outputs[name]) == set(store.OUTPUT_KEYS)
    kinds = {name: [k for k in ("image", "video", "audio") if getattr(inputs[name], k) is not None] for name in NAMES}
    assert kinds == {
        "image": ["image"],
        "video": ["video"],
        "audio": ["audio"],
        "video_audio": ["video", "audio"],
        "text": [],
    }
    size = sum(path.stat().st_size for path in (store.INPUTS, store.EXAMPLES, store.OUTPUTS))
    assert size < SIZE_LIMIT, f"the golden takes {size} bytes; keep it under 1 MB"


def describe_token_change(name, stored_ids, ids, prompt_length) -> str:
    """Where the token sequences first part, in words."""
    if len(stored_ids) != len(ids) and np.array_equal(stored_ids[:prompt_length], ids[:prompt_length]):
        return (
            f"{name}: generated {len(ids) - prompt_length} tokens, golden {len(stored_ids) - prompt_length} "
            f"(golden ids {stored_ids[prompt_length:].tolist()}, now {ids[prompt_length:].tolist()})"
        )
    common = min(len(stored_ids), len(ids))
    differing = np.flatnonzero(stored_ids[:common] != ids[:common])
    first = int(differing[0]) if len(differing) else common
    where = "prompt position" if first < prompt_length else "generated step"
    index = first if first < prompt_length else first - prompt_length
    return (
        f"{name}: token ids differ from {where} {index} on (golden length {len(stored_ids)}, now {len(ids)}; "
        f"golden {stored_ids[first : first + 5].tolist()}, now {ids[first : first + 5].tolist()})"
    )


def describe_logit_change(name, stored, logits) -> str | None:
    """The largest logit change, or None within LOGIT_ATOL."""
    if stored.shape != logits.shape:
        return f"{name}: logits have shape {logits.shape}, golden {stored.shape}"
    difference = np.abs(logits.astype(np.float64) - stored)
    step, token = np.unravel_index(int(difference.argmax()), difference.shape)
    worst = float(difference[step, token])
    if worst <= LOGIT_ATOL:
        return None
    return (
        f"{name}: max |Δlogit| = {worst:.3g} > {LOGIT_ATOL} at decoding step {step}, token id {token} "
        f"(golden {stored[step, token]:.4f}, now {logits[step, token]:.4f}); mean |Δ| {difference.mean():.3g}"
    )


def describe_routing_change(name, stored, margin, experts, layers, modality) -> str | None:
    """MoE layers and positions whose chosen experts changed beyond a float-noise tie, or None."""
    if stored.shape != experts.shape:
        return f"{name}: routing has shape (layers, positions, k) {experts.shape}, golden {stored.shape}"
    changed = np.any(stored != experts, axis=-1) & (margin >= ROUTING_TIE)  # (layers, positions)
    if not changed.any():
        return None
    slots, positions = np.nonzero(changed)
    lines = [
        f"layer {layers[s]} position {p} ({modality[p]}): experts {stored[s, p].tolist()} -> {experts[s, p].tolist()} "
        f"(golden margin {margin[s, p]:.2g})"
        for s, p in zip(slots[:8], positions[:8], strict=True)
    ]
    per_layer = {layers[s]: int(changed[s].sum()) for s in range(len(layers)) if changed[s].any()}
    return (
        f"{name}: routing moved at {int(changed.sum())} of {changed.size} (layer, position) pairs, per layer "
        f"{per_layer}; first: " + "; ".join(lines)
    )


@pytest.mark.parametrize("name", NAMES)
def test_toy_twin_matches_the_golden(twin_lab, golden, name):
    inputs, outputs, _ = golden
    stored = outputs[name]
    run, now = store.run_example(twin_lab, inputs[name])
    prompt_length = len(now["token_ids"]) - len(run.generated_ids)
    problems = []
    if not np.array_equal(stored["token_ids"], now["token_ids"]):
        problems.append(describe_token_change(name, stored["token_ids"], now["token_ids"], prompt_length))
    logits = describe_logit_change(name, stored["logits"], now["logits"])
    routing = describe_routing_change(
        name,
        stored["routing_experts"],
        stored["routing_margin"],
        now["routing_experts"],
        run.routing.layers,
        run.token_map.by_position("modality"),
    )
    problems += [problem for problem in (logits, routing) if problem]
    assert not problems, "the toy twin no longer matches tests/golden:\n" + "\n".join(problems)


def test_the_check_names_what_moved(golden):
    """The descriptions name the example, step, token, layer, position and experts (checked on edited copies)."""
    _, outputs, _ = golden
    stored = outputs["video"]
    logits = stored["logits"].copy()
    logits[1, 7] += 0.25
    assert describe_logit_change("video", stored["logits"], logits) == (
        f"video: max |Δlogit| = 0.25 > {LOGIT_ATOL} at decoding step 1, token id 7 (golden "
        f"{stored['logits'][1, 7]:.4f}, now {logits[1, 7]:.4f}); mean |Δ| {0.25 / logits.size:.3g}"
    )
    assert describe_logit_change("video", stored["logits"], stored["logits"] + LOGIT_ATOL / 2) is None
    experts, margin = stored["routing_experts"].copy(), stored["routing_margin"]
    layers, positions = [10 * (slot + 1) for slot in range(experts.shape[0])], experts.shape[1]
    modality = np.array(["text"] * positions, dtype=object)
    robust = int(np.flatnonzero(margin[0] >= ROUTING_TIE)[0])
    before = experts[0, robust].tolist()
    experts[0, robust] = (experts[0, robust] + 1) % 8
    message = describe_routing_change("video", stored["routing_experts"], margin, experts, layers, modality)
    assert message.startswith("video: routing moved at 1 of")
    assert f"layer 10 position {robust} (text): experts {before} -> {experts[0, robust].tolist()}" in message
    tie = stored["routing_margin"].copy()
    tie[0, robust] = ROUTING_TIE / 10  # the same change at a stored tie is float noise
    assert describe_routing_change("video", stored["routing_experts"], tie, experts, layers, modality) is None
    ids = stored["token_ids"].copy()
    ids[-1] += 1
    assert "generated step" in describe_token_change("video", stored["token_ids"], ids, len(ids) - 2)
