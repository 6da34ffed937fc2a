"""Reading, writing and running the stored golden of the toy twin.

The golden is three files in this folder:

- `inputs.npz.xz`: the exact media of every example, as the model got them: uint8 RGB image `(H, W, 3)`, uint8 video
  frames `(T, H, W, 3)`, int16 PCM audio at 16 kHz (an npz archive, xz-compressed so that near-identical video
  frames cost almost nothing).
- `examples.json`: per example the question, the media settings (video fps, audio rate), where it came from
  (ShapesWorld family, task, seed: provenance only, never used to redraw it), the sha256 of its media, and a readable
  summary of the stored outputs (answer, generated ids, top-5 ids per step).
- `outputs.npz`: per example what `lab.run(prompt, max_new_tokens=3, return_logits=True, capture=["routing"],
  reducer=None)` gave: `token_ids` (the sequence the LLM saw plus the generated ids), `logits` `(steps, vocab)`
  float32, `routing_experts` `(moe layers, positions, k)` (sorted per position), `routing_margin`
  `(moe layers, positions)`: how far the k-th chosen expert's selection score (sigmoid + correction bias) was above
  the best expert left out, so a check can tell a float-noise tie from a behaviour change.

Both make_golden.py (writing) and tests/test_golden.py (checking) go through `load_inputs` and `run_example`, so
the test runs exactly the stored inputs, never media redrawn from a seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).parent
INPUTS, EXAMPLES, OUTPUTS = FOLDER / "inputs.npz.xz", FOLDER / "examples.json", FOLDER / "outputs.npz"
RUN_ARGUMENTS = dict(max_new_tokens=3, return_logits=True, capture=["routing"], reducer=None)
OUTPUT_KEYS = ("token_ids", "logits", "routing_experts", "routing_margin")


@dataclass
class GoldenInput:
    """One stored example: its name, question and media exactly as stored."""

    name: str
    question: str
    image: np.ndarray | None = None  # (H, W, 3) uint8
    video: np.ndarray | None = None  # (T, H, W, 3) uint8
    fps: float | None = None
    audio: np.ndarray | None = None  # (samples,) int16 PCM
    rate: int | None = None
    provenance: dict | None = None  # where make_golden drew it from (ShapesWorld family, task, seed)

    def media_sha256(self) -> str:
        """Hash of the media bytes (and their shapes), to notice an input file edited without new outputs."""
        digest = hashlib.sha256()
        for array in (self.image, self.video, self.audio):
            if array is not None:
                digest.update(str((array.dtype, array.shape)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def prompt(self, lab):
        """`lab.prompt(question, ...)` with the stored media (audio as float samples in [-1, 1))."""
        from omni_lab.media import VideoClip

        media = {}
        if self.image is not None:
            media["images"] = [self.image]
        if self.video is not None:
            media["video"] = VideoClip(self.video, fps=self.fps, source=f"<golden {self.name}>")
        if self.audio is not None:
            media["audio"] = (self.audio.astype(np.float32) / 32768.0, self.rate)
        return lab.prompt(self.question, thinking=False, **media)


def write_inputs(inputs: list[GoldenInput]) -> None:
    """Store the media of every example in `inputs.npz.xz`."""
    arrays = {}
    for example in inputs:
        for kind in ("image", "video", "audio"):
            value = getattr(example, kind)
            if value is not None:
                arrays[f"{example.name}/{kind}"] = value
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    INPUTS.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def load_inputs() -> list[GoldenInput]:
    """Every stored example with its media read back from `inputs.npz.xz` and its settings from examples.json."""
    arrays = np.load(io.BytesIO(lzma.decompress(INPUTS.read_bytes())))
    examples = json.loads(EXAMPLES.read_text())["examples"]
    loaded = []
    for name, entry in examples.items():
        media = {kind: arrays[f"{name}/{kind}"] for kind in ("image", "video", "audio") if f"{name}/{kind}" in arrays}
        loaded.append(GoldenInput(name, entry["question"], fps=entry.get("fps"), rate=entry.get("rate"), **media))
    return loaded


def run_example(lab, example: GoldenInput, scores: bool = False):
    """The stored example through the public API: `lab.prompt` + `lab.run` with `RUN_ARGUMENTS`.

    Args:
        lab: `ol.load("toy")`.
        example: a stored example.
        scores: also capture the routers' sigmoid scores (make_golden needs them for the margins).

    Returns:
        (run, {"token_ids", "logits", "routing_experts"} as numpy arrays).
    """
    import omni_lab as ol

    arguments = dict(RUN_ARGUMENTS)
    if scores:
        arguments["capture"] = [ol.capture.routing(scores=True)]
    run = lab.run(example.prompt(lab), **arguments)
    experts = run.routing.experts.numpy()  # (layers, positions, k), in the router's order
    outputs = {
        "token_ids": run.token_ids.numpy().astype(np.int32),
        "logits": run.logits.float().numpy(),
        "routing_experts": np.sort(experts, axis=-1).astype(np.int16),  # the chosen set; order within it is noise
    }
    return run, outputs


def load_outputs() -> dict[str, dict[str, np.ndarray]]:
    """{example name: {key: array}} from outputs.npz."""
    stored = np.load(OUTPUTS)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for key in stored.files:
        name, field = key.split("/", 1)
        outputs.setdefault(name, {})[field] = stored[key]
    return outputs
