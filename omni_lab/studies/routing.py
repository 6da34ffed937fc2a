"""Routing studies: how reduction shifts expert choices, and what each expert specialises in.

`routing_shift` compares the top-k expert *sets* of the tokens that survive a reducer with the same tokens in the
unreduced run, per MoE layer and per modality, through `Routing.compare(..., by="modality")`: pruning changes the
context every later layer sees, so even kept tokens can be routed elsewhere. `expert_specialization` pools routing
over many prompts into the layer x expert x modality load, the routing entropy per modality (`entropy_bits`, the
capture results' one entropy helper) and each expert's top tokens with where they came from.
"""

from __future__ import annotations

import numpy as np

from ..capture.results import entropy_bits
from .common import as_prompt, as_prompts, progress, write_rows
from .results import Specialization


def routing_shift(lab, prompt, reducer, *, out=None):
    """Per MoE layer and modality, the share of surviving tokens whose top-k expert set changes under `reducer`.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` or a string.
        reducer: a reducer object, {modality: reducer}, "model" or None.
        out: as in `sweep`.
    Returns:
        DataFrame from `Routing.compare(..., by="modality")`: layer, modality ("all" and each modality), compared,
        changed, share_changed.
    """
    prompt = as_prompt(lab, prompt)
    encoded = lab.encode(prompt)
    full = lab.run(prompt, max_new_tokens=0, reducer=None, capture=["routing"], encoded=encoded).routing
    reduced = lab.run(prompt, max_new_tokens=0, reducer=reducer, capture=["routing"], encoded=encoded).routing
    frame = reduced.compare(full, by="modality")
    write_rows(frame, out, "routing_shift")
    return frame


DETAIL_COLUMNS = ("modality", "item", "text", "tubelet", "x0", "y0", "x1", "y1", "t0", "t1")


def expert_specialization(
    lab, prompts, *, reducer="model", top: int = 5, progress_bar: bool = True, out=None
) -> Specialization:
    """Layer x expert x modality load over `prompts`, routing entropy per modality, each expert's top tokens.

    Args:
        lab: the `Lab`.
        prompts: `Prompt`s, strings, or (prompt, reference) pairs.
        reducer: passed to `lab.run` ("model": the model's own EVS).
        top: how many tokens to keep per expert.
        progress_bar, out: as in `sweep` (`out` receives `.load`).
    Returns:
        `Specialization`: `.load` (layer, expert, modality, count, weight, share of the modality's picks at that
        layer), `.entropy` (layer, modality, entropy_bits of that pooled load) and `.top_tokens` (layer, expert,
        rank, prompt, position, weight, modality, item, text, tubelet, x0, y0, x1, y1, t0, t1: the `top` tokens
        each expert weighs most).
    """
    import pandas as pd

    prompts = as_prompts(lab, prompts)
    loads, tops, details_by_prompt = [], [], []
    bar = progress(len(prompts), "expert specialization", progress_bar)
    for index, prompt in enumerate(prompts):
        routing = lab.run(prompt, max_new_tokens=0, reducer=reducer, capture=["routing"]).routing
        loads.append(routing.load(by="modality"))
        details_by_prompt.append({column: routing.token_map.by_position(column) for column in DETAIL_COLUMNS})
        for slot, layer in enumerate(routing.layers):
            experts, weights = routing.experts[slot].numpy(), routing.weights[slot].float().numpy()
            positions = np.repeat(np.arange(experts.shape[0]), experts.shape[1])
            picks = pd.DataFrame(
                {
                    "layer": layer,
                    "expert": experts.reshape(-1),
                    "weight": weights.reshape(-1),
                    "position": positions,
                    "prompt": index,
                }
            )
            tops.append(picks.sort_values("weight", ascending=False).groupby("expert").head(top))
        bar.update()
    bar.close()
    load = pd.concat(loads).groupby(["layer", "expert", "modality"], as_index=False)[["count", "weight"]].sum()
    totals = load.groupby(["layer", "modality"])["count"].transform("sum")
    load["share"] = load["count"] / totals.clip(lower=1)
    entropy = load.groupby(["layer", "modality"])["share"].apply(lambda share: entropy_bits(share.to_numpy()))
    top_tokens = pd.concat(tops).sort_values(["layer", "expert", "weight"], ascending=[True, True, False])
    top_tokens = top_tokens.groupby(["layer", "expert"]).head(top).reset_index(drop=True)
    top_tokens["rank"] = top_tokens.groupby(["layer", "expert"]).cumcount()
    prompt_index, position = top_tokens.prompt.to_numpy(), top_tokens.position.to_numpy()
    for column in DETAIL_COLUMNS:
        top_tokens[column] = [details_by_prompt[p][column][q] for p, q in zip(prompt_index, position, strict=True)]
    write_rows(load, out, "expert_specialization")
    return Specialization(load=load, entropy=entropy.rename("entropy_bits").reset_index(), top_tokens=top_tokens)
