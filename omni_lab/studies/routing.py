"""Routing studies: how reduction shifts expert choices, and what each expert specialises in.

`routing_shift` compares the top-k expert *sets* of the tokens that survive a reducer with the same tokens in the
unreduced run, per MoE layer and per modality, through `Routing.compare(..., by="modality")`: pruning changes the
context every later layer sees, so even kept tokens can be routed elsewhere. `expert_specialization` pools routing
over many prompts into the layer x expert x modality load, the routing entropy per modality (`entropy_bits`, the
capture results' one entropy helper) and each expert's top tokens with where they came from.

Given a `Dataset` (or `cluster=ol.cluster.Ray(...)`), both run prompt by prompt, here or on Ray workers (see
`per_prompt.py`): `routing_shift` returns every prompt's table keyed by prompt; `expert_specialization` stores each
prompt's load and top tokens (so a rerun resumes) and pools them exactly as it pools a list of prompts here.
"""

from __future__ import annotations

import numpy as np

from .. import validate
from ..capture.results import entropy_bits
from ..errors import OmniLabInputError
from .common import as_prompt, as_prompts, progress_bar, write_rows
from .dataset import Dataset
from .per_prompt import is_many, one_prompt_only, run_per_prompt
from .results import Specialization

SHIFT_COLUMNS = ["prompt", "prompt_key", "layer", "modality", "compared", "changed", "share_changed"]
SHIFT_DTYPES = {
    "prompt": "int64",
    "prompt_key": "str",
    "layer": "int64",
    "modality": "str",
    "compared": "int64",
    "changed": "int64",
    "share_changed": "float64",
}


def routing_shift(lab, prompt, reducer, *, out=None, progress: bool = True, cluster=None):
    """Per MoE layer and modality, the share of surviving tokens whose top-k expert set changes under `reducer`.

    Args:
        lab: the `Lab` (with `cluster=`, also a model source string such as "toy").
        prompt: a `Prompt` or a string; or many prompts: an `ol.studies.Dataset`, or a list of prompts, strings or
            (prompt, reference) pairs (with `cluster=`, a Dataset or strings: inputs travel as data).
        reducer: a reducer object, {modality: reducer}, "model" or None.
        out: SQLite (.sqlite/.db, table "routing_shift") or Parquet (.parquet). Many prompts: written prompt by
            prompt; a rerun with the same `out` skips the prompts already there (keyed by `prompt_key`).
        progress: show a progress bar over the prompts (all workers), with many prompts.
        cluster: None (run here) or `ol.cluster.Ray(...)` (many prompts only): prompts run on Ray actors that each
            load the model once; their rows come back here, into the same table and `out`.
    Returns:
        DataFrame from `Routing.compare(..., by="modality")`: layer, modality ("all" and each modality), compared,
        changed, share_changed. Many prompts: `SHIFT_COLUMNS`, that table for each prompt after its prompt (its
        index) and prompt_key (its dataset key; a list's index), exactly as `routing_shift` on it alone.
    """
    if is_many(prompt):
        return run_per_prompt(
            "routing_shift",
            shift_cells,
            lab,
            prompt,
            {"reducer": reducer},
            columns=SHIFT_COLUMNS,
            dtypes=SHIFT_DTYPES,
            out=out,
            table="routing_shift",
            progress=progress,
            cluster=cluster,
        )
    one_prompt_only("routing_shift", cluster)
    frame = shift(lab, prompt, reducer)
    write_rows(frame, out, "routing_shift")
    return frame


def shift(lab, prompt, reducer):
    """`routing_shift` on one prompt, nothing written."""
    prompt = as_prompt(lab, prompt)
    encoded = lab.encode(prompt)
    full = lab.run(prompt, max_new_tokens=0, reducer=None, capture=["routing"], encoded=encoded).routing
    reduced = lab.run(prompt, max_new_tokens=0, reducer=reducer, capture=["routing"], encoded=encoded).routing
    return reduced.compare(full, by="modality")


def shift_cells(lab, prompt_of, cells: list, *, reducer) -> list[dict]:
    """`routing_shift`'s rows of each prompt in `cells` (`PromptCell`s), tagged with the prompt.

    Returns:
        row dicts with `SHIFT_COLUMNS`, a prompt's rows together.
    """
    rows = []
    for cell in cells:
        frame = shift(lab, prompt_of(cell.prompt), reducer)
        rows.extend({"prompt": cell.prompt, "prompt_key": cell.key, **row} for row in frame.to_dict("records"))
    return rows


DETAIL_COLUMNS = ("modality", "item", "text", "tubelet", "x0", "y0", "x1", "y1", "t0", "t1")
TOP_COLUMNS = ["layer", "expert", "weight", "position", "prompt", "rank", *DETAIL_COLUMNS]
LOAD_COLUMNS = ["layer", "expert", "modality", "count", "weight"]
# Each prompt's stored rows (many prompts): its load ("load" rows) and its experts' top tokens ("top" rows).
PROMPT_COLUMNS = ["prompt", "prompt_key", "part", "layer", "expert", "modality", "count", "weight", "position"]
PROMPT_COLUMNS += [column for column in DETAIL_COLUMNS if column != "modality"]
PROMPT_DTYPES = {
    "prompt": "int64",
    "prompt_key": "str",
    "part": "str",
    "layer": "int64",
    "expert": "int64",
    "modality": "str",
    "count": "Int64",  # missing on "top" rows
    "weight": "float64",  # a top token's float32 weight, widened exactly
    "position": "Int64",  # this and the details: missing on "load" rows
    "item": "Int64",
    "text": "str",
    "tubelet": "Int64",
    **{column: "float64" for column in ("x0", "y0", "x1", "y1", "t0", "t1")},
}


def prompt_routing(lab, prompt, index: int, reducer, top: int):
    """One prompt's routing: its expert load by modality and each expert's `top` tokens with their details.

    Args:
        lab: the `Lab`.
        prompt: the `Prompt`.
        index: the prompt's index in the study's inputs (the picks' `prompt`).
        reducer: passed to `lab.run`.
        top: tokens kept per expert and layer.
    Returns:
        (load: `LOAD_COLUMNS`, picks: layer, expert, weight (float32), position, prompt, `DETAIL_COLUMNS`).
    """
    import pandas as pd

    routing = lab.run(prompt, max_new_tokens=0, reducer=reducer, capture=["routing"]).routing
    load = routing.load(by="modality")[LOAD_COLUMNS]
    picks = []
    for slot, layer in enumerate(routing.layers):
        experts, weights = routing.experts[slot].numpy(), routing.weights[slot].float().numpy()  # (positions, k)
        positions = np.repeat(np.arange(experts.shape[0]), experts.shape[1])
        frame = pd.DataFrame(
            {
                "layer": layer,
                "expert": experts.reshape(-1),
                "weight": weights.reshape(-1),
                "position": positions,
                "prompt": index,
            }
        )
        picks.append(frame.sort_values("weight", ascending=False).groupby("expert").head(top))
    picks = pd.concat(picks)
    position = picks.position.to_numpy()
    for column in DETAIL_COLUMNS:
        picks[column] = list(routing.token_map.by_position(column)[position])
    return load, picks


def pool(load, picks, top: int) -> Specialization:
    """`Specialization` from the prompts' loads and picks, concatenated in prompt order."""
    load = load.groupby(["layer", "expert", "modality"], as_index=False)[["count", "weight"]].sum()
    totals = load.groupby(["layer", "modality"])["count"].transform("sum")
    load["share"] = load["count"] / totals.clip(lower=1)
    entropy = load.groupby(["layer", "modality"])["share"].apply(lambda share: entropy_bits(share.to_numpy()))
    top_tokens = picks.sort_values(["layer", "expert", "weight"], ascending=[True, True, False])
    top_tokens = top_tokens.groupby(["layer", "expert"]).head(top).reset_index(drop=True)
    top_tokens["rank"] = top_tokens.groupby(["layer", "expert"]).cumcount()
    return Specialization(
        load=load, entropy=entropy.rename("entropy_bits").reset_index(), top_tokens=top_tokens[TOP_COLUMNS]
    )


def specialization_cells(lab, prompt_of, cells: list, *, reducer, top: int) -> list[dict]:
    """The stored rows (`PROMPT_COLUMNS`) of each prompt in `cells` (`PromptCell`s): its load, then its picks."""
    rows = []
    for cell in cells:
        load, picks = prompt_routing(lab, prompt_of(cell.prompt), cell.prompt, reducer, top)
        tags = {"prompt": cell.prompt, "prompt_key": cell.key}
        rows.extend({**tags, "part": "load", **row} for row in load.to_dict("records"))
        rows.extend({**tags, "part": "top", **row} for row in picks.to_dict("records"))
    return rows


def expert_specialization(
    lab, prompts, *, reducer="model", top: int = 5, progress: bool = True, out=None, cluster=None
) -> Specialization:
    """Layer x expert x modality load over `prompts`, routing entropy per modality, each expert's top tokens.

    Args:
        lab: the `Lab` (with `cluster=`, also a model source string such as "toy").
        prompts: `Prompt`s, strings, or (prompt, reference) pairs; or an `ol.studies.Dataset` (with `cluster=`, a
            Dataset or strings: inputs travel as data).
        reducer: passed to `lab.run` ("model": the model's own EVS).
        top: how many tokens to keep per expert.
        progress: show a progress bar over the prompts (all workers).
        out: SQLite (.sqlite/.db) or Parquet (.parquet). A list of prompts: `.load`, once pooled (table
            "expert_specialization"). A Dataset or `cluster=`: each prompt's rows as it is done (table
            "expert_specialization_prompts", `PROMPT_COLUMNS`: "load" rows hold its load, "top" rows its experts'
            top tokens), so a rerun with the same `out` skips the prompts already there (keyed by `prompt_key`).
        cluster: None (run here) or `ol.cluster.Ray(...)`: prompts run on Ray actors that each load the model once;
            their rows come back here and are pooled as a list's are.
    Returns:
        `Specialization`: `.load` (layer, expert, modality, count, weight, share of the modality's picks at that
        layer), `.entropy` (layer, modality, entropy_bits of that pooled load) and `.top_tokens` (layer, expert,
        weight, position, prompt (its index in `prompts`), rank, modality, item, text, tubelet, x0, y0, x1, y1,
        t0, t1: the `top` tokens each expert weighs most). The same whichever way the prompts ran.
    """
    import pandas as pd

    top = validate.number("top", top, low=1, integer=True)
    if isinstance(prompts, Dataset) or cluster is not None:
        rows = run_per_prompt(
            "expert_specialization",
            specialization_cells,
            lab,
            prompts,
            {"reducer": reducer, "top": top},
            columns=PROMPT_COLUMNS,
            dtypes=PROMPT_DTYPES,
            out=out,
            table="expert_specialization_prompts",
            progress=progress,
            cluster=cluster,
        )
        load = rows[rows.part == "load"][LOAD_COLUMNS].astype({"count": "int64"})
        picks = rows[rows.part == "top"].astype({"weight": "float32", "position": "int64", "item": "int64"})
        picks = picks.astype({"tubelet": "int64"})[[column for column in TOP_COLUMNS if column != "rank"]]
        return pool(load, picks, top)
    prompts = as_prompts(lab, prompts)
    loads, picks = [], []
    bar = progress_bar(len(prompts), "expert specialization", progress)
    for index, prompt in enumerate(prompts):
        prompt_load, prompt_picks = prompt_routing(lab, prompt, index, reducer, top)
        loads.append(prompt_load)
        picks.append(prompt_picks)
        bar.update()
    bar.close()
    result = pool(pd.concat(loads), pd.concat(picks), top)
    write_rows(result.load, out, "expert_specialization")
    return result


TOP_K_COLUMNS = [
    "prompt",
    "prompt_key",
    "k",
    "answer",
    "reference",
    "correct",
    "margin",
    "kl_first_token",
    "same_answer",
]
TOP_K_DTYPES = {
    "prompt": "int64",
    "prompt_key": "str",
    "k": "int64",
    "answer": "str",
    "reference": "str?",
    "correct": "boolean",
    "margin": "float64",
    "kl_first_token": "float64",
    "same_answer": "bool",
}


def top_k_sweep(lab, prompts, ks=(1, 2), *, layers=None, options=None, progress: bool = True, out=None, cluster=None):
    """Answers, margins and KL as every token is routed to its top `k` experts (`ol.set_top_k`), k by k, against the
    model's own k.

    Args:
        lab: the `Lab` (with an executor that loads its own models, also a model source string).
        prompts: a Dataset, or a list of prompts, strings or (prompt, reference) pairs.
        ks: the k to try (each 1 .. the routed experts); the model's own k is always added as the reference.
        layers: MoE layers whose k changes (default all).
        options: the decoding (`RunOptions`; default `max_new_tokens=8`, greedy, no token reduction).
        progress, out, cluster: as every per-prompt study.
    Returns:
        DataFrame with `TOP_K_COLUMNS`, one row per (prompt, k): the answer, whether it matches the reference, the
        first answer token's margin (log p of the reference's first token over the best other token; NaN without a
        reference), KL(model's k || k) of the first token's distribution and whether the answer is the model's own.
    """
    from ..options import RunOptions

    options = RunOptions(max_new_tokens=8, reducer=None) if options is None else RunOptions.of(options)
    if isinstance(ks, int):
        ks = [ks]
    ks = [validate.number(f"ks[{i}]", k, low=1, integer=True) for i, k in enumerate(ks)]
    if not ks:
        raise OmniLabInputError("top_k_sweep needs at least one k")
    return run_per_prompt(
        "top_k_sweep",
        top_k_cells,
        lab,
        prompts if isinstance(prompts, (list, Dataset)) else [prompts],
        {"ks": ks, "layers": layers, "options": options},
        columns=TOP_K_COLUMNS,
        dtypes=TOP_K_DTYPES,
        out=out,
        table="top_k_sweep",
        progress=progress,
        cluster=cluster,
    )


def top_k_cells(lab, prompt_of, cells: list, *, ks: list[int], layers, options) -> list[dict]:
    """Every k's row of each prompt in `cells`."""
    from ..capture.interventions import set_top_k
    from .common import is_correct, kl_divergence, margin

    own = int(lab.config.text_config.num_experts_per_tok)
    rows = []
    for cell in cells:
        prompt = prompt_of(cell.prompt)
        reference = prompt.reference
        target = lab.tokenizer.encode(reference.strip(), add_special_tokens=False)[:1] if reference else []
        base = lab.run(prompt, options, return_logits=True)
        for k in dict.fromkeys([own, *ks]):
            run = (
                base if k == own else lab.run(prompt, options, interventions=[set_top_k(k, layers)], return_logits=True)
            )
            rows.append(
                {
                    "prompt": cell.prompt,
                    "prompt_key": cell.key,
                    "k": k,
                    "answer": run.answer,
                    "reference": reference,
                    "correct": is_correct(run.answer, reference),
                    "margin": margin(run.logits[0], target[0]) if target else float("nan"),
                    "kl_first_token": kl_divergence(base.logits[0], run.logits[0]),
                    "same_answer": run.answer == base.answer,
                }
            )
    return rows
