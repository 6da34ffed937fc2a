"""Encoder signals: what transformers' encoders compute but do not return, recomputed for the reducers that ask.

A reducer names the signals it reads in its `signals` attribute (VisionZip: `("vision.summary_attention",
"vision.keys")`); the pipeline (`forward.encode_media(..., signals=...)`) records them while the encoders run and hands
each media item its own in `ReductionItem.signals`. Nothing here knows which reducer asked.

Signals of the vision tower, both read from the last RADIO block (the block whose output the projector takes:
Nemotron Omni reads the tower's final features, not a penultimate layer) by hooking its attention's `q_proj` and
`k_proj` outputs. The tower runs SDPA, which returns no attention weights, so the probabilities are recomputed here
from those queries and keys, as the block's own softmax computes them (scale d_h^-1/2, over the item's own sequence:
its CLS and register tokens and its patches):

    vision.summary_attention   (N,) per LLM token: the attention the tower's CLS tokens pay to the token's 2 x 2
                               patches (the pixel-shuffle group the token is made of), summed over heads and the four
                               patches, averaged over the CLS tokens. C-RADIO has one CLS token per teacher (4 on the
                               release: CLIP, SigLIP, DINOv2, SAM; the "summary" tokens) and 6 registers; the
                               registers are left out (they hold no summary, only the high-norm artefacts registers
                               absorb).
    vision.keys                (N, 4 x d_h) per LLM token: the block's keys averaged over heads, its four patches'
                               keys concatenated in the pixel-shuffle order (the VisionZip "metric").

For video each tubelet is its own sequence; an item's signals run over its tubelets in order.
"""

from __future__ import annotations

import math

import torch

from ..errors import OmniLabInputError

VISION_SIGNALS = ("vision.summary_attention", "vision.keys")
SIGNALS = VISION_SIGNALS


def check(names) -> tuple[str, ...]:
    """`names` as a tuple of known signal names, or OmniLabInputError."""
    names = tuple(names or ())
    unknown = set(names) - set(SIGNALS)
    if unknown:
        raise OmniLabInputError(f"unknown encoder signals {sorted(unknown)}; omni-lab records {list(SIGNALS)}")
    return names


class VisionRecorder:
    """Hooks on the vision tower's last block that keep its queries and keys for each tower call.

    Use as a context manager around `get_image_features` / `get_video_features`; `items(...)` then turns the kept
    tensors into per-item signals.
    """

    def __init__(self, model, names):
        self.model, self.names = model, tuple(name for name in names if name in VISION_SIGNALS)
        self.calls: list[dict] = []
        self._handles = []

    def __enter__(self) -> VisionRecorder:
        if not self.names:
            return self
        attention = self.model.vision_model.encoder.layer[-1].attention
        self._handles.append(attention.q_proj.register_forward_hook(self._keep("q")))
        self._handles.append(attention.k_proj.register_forward_hook(self._keep("k")))
        return self

    def __exit__(self, *exc) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _keep(self, key: str):
        def hook(module, inputs, output):
            if key == "q":
                self.calls.append({})
            self.calls[-1][key] = output.detach()

        return hook

    def sequences(self, grids: list[tuple[int, int]], call: int = -1) -> list[dict]:
        """Signals of each sequence (image or tubelet) of one tower call, in order.

        Args:
            grids: each sequence's patch grid (rows, cols), in the order the tower saw them.
            call: which recorded call (default the last).
        Returns:
            one {signal name: tensor over the sequence's LLM tokens} per sequence.
        """
        config = self.model.vision_model.config
        heads = config.num_attention_heads
        prefix, cls = config.num_summary_tokens, config.num_cls_tokens
        q, k = self.calls[call]["q"], self.calls[call]["k"]
        q = q.reshape(-1, q.shape[-1])  # (total, H * d) packed images or (tubelets * S, H * d)
        k = k.reshape(-1, k.shape[-1])
        head_dim = q.shape[-1] // heads
        out, start = [], 0
        for rows, cols in grids:
            length = prefix + rows * cols
            q_item = q[start : start + length].float().view(length, heads, head_dim)
            k_item = k[start : start + length].float().view(length, heads, head_dim)
            start += length
            signals = {}
            if "vision.summary_attention" in self.names:
                scores = torch.einsum("chd,shd->chs", q_item[:cls], k_item) / math.sqrt(head_dim)  # (cls, H, S)
                probabilities = torch.softmax(scores, dim=-1)[..., prefix:]  # (cls, H, patches)
                per_patch = probabilities.sum(dim=1).mean(dim=0)  # (patches,)
                signals["vision.summary_attention"] = shuffle(per_patch[:, None], rows, cols).sum(dim=-1)
            if "vision.keys" in self.names:
                signals["vision.keys"] = shuffle(k_item[prefix:].mean(dim=1), rows, cols)  # (tokens, 4 * d)
            out.append(signals)
        if start != q.shape[0]:
            raise RuntimeError(f"vision signals: {q.shape[0]} positions recorded, the grids describe {start}")
        return out


def shuffle(values: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`(rows * cols, F)` per-patch values -> `(rows/2 * cols/2, 4 F)`: each merged token's 2 x 2 patches
    concatenated, tokens row-major, as the model's pixel shuffle groups them."""
    width = values.shape[-1]
    grid = values.reshape(rows // 2, 2, cols // 2, 2, width)  # (r, dr, c, dc, F)
    return grid.permute(0, 2, 1, 3, 4).reshape(rows // 2 * (cols // 2), 4 * width)


def per_item(sequences: list[dict], counts: list[int]) -> list[dict]:
    """Concatenate consecutive sequences' signals into items of `counts` sequences each (a video's tubelets)."""
    out, start = [], 0
    for count in counts:
        mine = sequences[start : start + count]
        start += count
        out.append({name: torch.cat([sequence[name] for sequence in mine]) for name in (mine[0] if mine else {})})
    return out
