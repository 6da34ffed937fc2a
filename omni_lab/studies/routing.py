"""Routing studies: how reduction shifts expert choices, and what each expert specialises in.

`routing_shift` compares the top-k expert *sets* of the tokens that survive a reducer with the same tokens in the
unreduced run, per MoE layer (and per modality): pruning changes the context every later layer sees, so even kept
tokens can be routed elsewhere. `expert_specialization` pools routing over many prompts into the layer × expert ×
modality load, the routing entropy per modality, and each expert's top tokens with where they came from.
"""

from __future__ import annotations

import numpy as np
import torch

from .common import as_prompts, progress, write_rows


def routing_shift(lab, prompt, reducer, *, out=None):
    """Per MoE layer and modality, the share of surviving tokens whose top-k expert set changes under `reducer`.

    Returns:
        DataFrame: layer, modality ("all" and each modality), compared, changed, share_changed.
    """
    import pandas as pd

    prompt = lab._as_prompt(prompt)
    encoded = lab.encode(prompt)
    full = lab.run(prompt, max_new_tokens=0, reducer=None, capture=["routing"], encoded=encoded).routing
    reduced = lab.run(prompt, max_new_tokens=0, reducer=reducer, capture=["routing"], encoded=encoded).routing
    df = reduced.token_map.df
    survivors = df[(df.position >= 0) & (df.modality != "generated")]
    full_df = full.token_map.df
    full_positions = full_df.loc[survivors.index, "position"].to_numpy().copy()
    reduced_positions = survivors.position.to_numpy().copy()
    rows = []
    for slot, layer in enumerate(reduced.layers):
        before = full.experts[slot, torch.from_numpy(full_positions)].sort(-1).values
        after = reduced.experts[slot, torch.from_numpy(reduced_positions)].sort(-1).values
        changed = (before != after).any(-1).numpy()
        for modality in ["all", *dict.fromkeys(survivors.modality)]:
            mask = np.ones(len(survivors), bool) if modality == "all" else (survivors.modality == modality).to_numpy()
            rows.append(
                {
                    "layer": layer,
                    "modality": modality,
                    "compared": int(mask.sum()),
                    "changed": int(changed[mask].sum()),
                    "share_changed": float(changed[mask].mean()),
                }
            )
    frame = pd.DataFrame(rows)
    write_rows(frame, out, "routing_shift")
    return frame


def expert_specialization(lab, prompts, *, reducer="model", top: int = 5, progress_bar: bool = True, out=None):
    """Layer × expert × modality load over `prompts`, routing entropy per modality, each expert's top tokens.

    Returns:
        DataFrame of the load: layer, expert, modality, count, share (of the modality's picks at that layer),
        weight (summed routing weight). `frame.attrs["entropy"]`: layer, modality, entropy_bits.
        `frame.attrs["top_tokens"]`: layer, expert, rank, prompt, position, weight, modality, item, text, tubelet,
        x0, y0, x1, y1, t0, t1 — the `top` tokens each expert weighs most.
    """
    import pandas as pd

    prompts = as_prompts(lab, prompts)
    loads, tops, token_rows = [], [], []
    bar = progress(len(prompts), "expert specialization", progress_bar)
    for index, prompt in enumerate(prompts):
        routing = lab.run(prompt, max_new_tokens=0, reducer=reducer, capture=["routing"]).routing
        load = routing.load(by="modality")
        loads.append(load)
        df = routing.token_map.df
        token_rows.append(df[df.position >= 0].set_index("position"))
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
    combined = pd.concat(loads).groupby(["layer", "expert", "modality"], as_index=False)[["count", "weight"]].sum()
    totals = combined.groupby(["layer", "modality"])["count"].transform("sum")
    combined["share"] = combined["count"] / totals.clip(lower=1)

    def bits(share):
        share = share[share > 0]
        return float(-(share * np.log2(share)).sum())

    entropy = combined.groupby(["layer", "modality"])["share"].apply(lambda s: bits(s.to_numpy()))
    top_tokens = pd.concat(tops).sort_values(["layer", "expert", "weight"], ascending=[True, True, False])
    top_tokens = top_tokens.groupby(["layer", "expert"]).head(top).reset_index(drop=True)
    top_tokens["rank"] = top_tokens.groupby(["layer", "expert"]).cumcount()
    details = []
    for _, pick in top_tokens.iterrows():
        token = token_rows[int(pick.prompt)].loc[int(pick.position)]
        details.append(
            {key: token[key] for key in ("modality", "item", "text", "tubelet", "x0", "y0", "x1", "y1", "t0", "t1")}
        )
    top_tokens = pd.concat([top_tokens, pd.DataFrame(details)], axis=1)
    combined.attrs["entropy"] = entropy.rename("entropy_bits").reset_index()
    combined.attrs["top_tokens"] = top_tokens
    write_rows(combined, out, "expert_specialization")
    return combined
