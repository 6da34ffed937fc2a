"""Regenerate the stored golden of the toy twin: `python tests/golden/make_golden.py` (from the repository root).

Draws one held-out ShapesWorld example per kind of input (image, video, audio, video + audio, text), stores its media
exactly (`inputs.npz.xz`), reads them back, runs each through the public API exactly as tests/test_golden.py does
(`store.run_example`: `lab.run(prompt, max_new_tokens=3, return_logits=True, capture=["routing"], reducer=None)`),
and stores what came out (`outputs.npz`, with a readable summary in `examples.json`). See store.py for the formats.

Examples are taken only where the golden is robust: every decoding step's best logit beats the runner-up by at least
`MIN_LOGIT_GAP`, so float noise cannot flip a generated token. Run it after a deliberate change of behaviour (a new
toy checkpoint, a transformers upgrade whose differences were reviewed) and commit the three files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.golden.store`

from tests.golden import store  # noqa: E402

EVAL_RUN_SEED = 11  # which held-out ShapesWorld examples to draw from (shapesworld.eval_seed)
KINDS = {"image": "image", "video": "video", "audio": "audio", "video_audio": "omni", "text": "text"}
MAX_TRIES = 200
MIN_LOGIT_GAP = 0.5
MAX_VIDEO_FRAMES = 8  # the smallest ShapesWorld clips: the stored inputs stay small
MAX_AUDIO_SECONDS = 2.0


def as_golden_input(name: str, example) -> store.GoldenInput:
    """The ShapesWorld example's media in the stored formats (uint8 pixels, int16 PCM)."""
    stored = store.GoldenInput(name, example.question)
    if example.image is not None:
        stored.image = np.asarray(example.image.convert("RGB"), dtype=np.uint8)
    if example.video is not None:
        stored.video, stored.fps = np.asarray(example.video.frames, dtype=np.uint8), float(example.video.fps)
    if example.audio is not None:
        waveform, rate = example.audio
        stored.audio = np.clip(np.round(np.asarray(waveform) * 32768.0), -32768, 32767).astype(np.int16)
        stored.rate = int(rate)
    return stored


def small_enough(example) -> bool:
    if example.video is not None and example.video.num_frames > MAX_VIDEO_FRAMES:
        return False
    return example.audio is None or len(example.audio[0]) / example.audio[1] <= MAX_AUDIO_SECONDS


def logit_gaps(logits: np.ndarray) -> np.ndarray:
    """Best minus runner-up logit at every step."""
    top = np.sort(logits, axis=-1)
    return top[:, -1] - top[:, -2]


def choose_examples(lab) -> list[store.GoldenInput]:
    """The first held-out example of each kind that is small and whose decoding is robust to float noise."""
    from omni_lab.toy.shapesworld import eval_seed, sample

    chosen = []
    for name, family in KINDS.items():
        for index in range(MAX_TRIES):
            seed = eval_seed(EVAL_RUN_SEED, family, index)
            example = sample(seed, family=family)
            if not small_enough(example):
                continue
            candidate = as_golden_input(name, example)
            _, outputs = store.run_example(lab, candidate)
            if logit_gaps(outputs["logits"]).min() >= MIN_LOGIT_GAP:
                candidate.provenance = {"family": family, "task": example.task, "seed": seed, "truth": example.answer}
                chosen.append(candidate)
                break
        else:
            raise SystemExit(f"no robust {family} example in {MAX_TRIES} tries; lower MIN_LOGIT_GAP")
    return chosen


def routing_margin(lab, run) -> np.ndarray:
    """(layers, positions): the k-th chosen expert's selection score minus the best unchosen one's.

    Selection score = sigmoid router score + the layer's correction bias, as the router chooses (docs/model_layout.md
    §2).
    """
    import torch

    routing = run.routing
    bias = torch.stack(
        [lab.model.language_model.model.layers[i].mixer.gate.e_score_correction_bias.float() for i in routing.layers]
    )  # (layers, experts)
    selection = routing.scores + bias[:, None, :]  # (layers, positions, experts)
    k = routing.experts.shape[-1]
    ranked = selection.sort(dim=-1, descending=True)
    chosen_by_score = ranked.indices[..., :k].sort(dim=-1).values
    if not torch.equal(chosen_by_score, routing.experts.sort(dim=-1).values):
        raise SystemExit("routing scores do not reproduce the chosen experts; is the correction bias elsewhere?")
    return (ranked.values[..., k - 1] - ranked.values[..., k]).numpy().astype(np.float32)


def main() -> int:
    import torch
    import transformers

    import omni_lab as ol

    torch.set_num_threads(min(2, torch.get_num_threads()))  # as tests/conftest.py
    lab = ol.load("toy")
    examples = choose_examples(lab)
    store.write_inputs(examples)
    provenance = {example.name: example.provenance for example in examples}
    summary = {}
    summary_file = {"examples": {e.name: {"question": e.question, "fps": e.fps, "rate": e.rate} for e in examples}}
    store.EXAMPLES.write_text(json.dumps(summary_file))  # load_inputs needs the settings to read the media back
    arrays = {}
    for example in store.load_inputs():  # the stored bytes, read back: exactly what the test will run
        run, outputs = store.run_example(lab, example, scores=True)
        outputs["routing_margin"] = routing_margin(lab, run)
        for key in store.OUTPUT_KEYS:
            arrays[f"{example.name}/{key}"] = outputs[key]
        top5 = np.argsort(-outputs["logits"], axis=-1)[:, :5]
        summary[example.name] = {
            "question": example.question,
            "fps": example.fps,
            "rate": example.rate,
            "media_sha256": example.media_sha256(),
            "shapesworld": provenance[example.name],
            "answer": run.answer,
            "generated_ids": [int(i) for i in run.generated_ids],
            "top5_ids_per_step": top5.tolist(),
            "min_logit_gap": round(float(logit_gaps(outputs["logits"]).min()), 4),
            "positions": int(outputs["routing_experts"].shape[1]),
        }
    np.savez_compressed(store.OUTPUTS, **arrays)
    store.EXAMPLES.write_text(
        json.dumps(
            {
                "run": {key: value for key, value in store.RUN_ARGUMENTS.items()},
                "made_with": {"transformers": transformers.__version__, "torch": torch.__version__},
                "examples": summary,
            },
            indent=1,
        )
        + "\n"
    )
    size = sum(path.stat().st_size for path in (store.INPUTS, store.EXAMPLES, store.OUTPUTS))
    for name, entry in summary.items():
        print(f"{name:12s} {entry['answer']!r:14} gap {entry['min_logit_gap']:.3f}  {entry['positions']} positions")
    print(f"wrote {store.INPUTS.name}, {store.EXAMPLES.name}, {store.OUTPUTS.name}: {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
