"""`direct_logit_attribution`: which layer kinds and which positions write the answer's first token, and in which
layer the answer forms (the logit lens), on one prompt.

One forward with the `direct_logit` capture (omni_lab/capture/lens.py): the final residual at the last prompt
position is the sum of the embedding and every mixer's write (Mamba, attention, each chosen routed expert, the shared
expert, MLP); with the final norm's scale frozen at its value for the run, each write's direct logit is its share of
the target's logit, and the shares sum to it. The attention and Mamba writes are split by source position and grouped
by the one partition (`groups=`: modality, item, tubelet, region, audio window, ...); a per-token mixer's write (MoE,
MLP) and the embedding belong to the position itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogitAttribution:
    """`direct_logit_attribution`'s result.

    Attributes:
        target_token, target_text: the token explained (the first answer token) and its text.
        components: one row per direct write: order, layer, kind, component, logit (they sum to `target_logit`).
        groups: one row per (layer, component, group): order, layer, kind, component, group, modality, logit: every
            write split over the groups of the positions that made it.
        lens: the logit lens at the same position: order, layer, kind, logprob, rank, top_token, top_text.
        target_logit: the model's logit of the target; residual_error, logit_error: the decomposition's checks.
        detail: the `DirectLogit` capture (its writes and per-source rows).
    """

    target_token: int
    target_text: str
    components: object
    groups: object
    lens: object
    target_logit: float
    residual_error: float
    logit_error: float
    detail: object

    def by_kind(self):
        """Direct logit per layer and writer kind (embedding, mamba, attention, routed experts, shared expert, mlp)."""
        table = self.components.assign(writer=self.components.component.map(_writer))
        return table.groupby(["order", "layer", "writer"], sort=True).logit.sum().reset_index()

    def by_group(self):
        """Direct logit per layer and group (every writer's share of that group's positions)."""
        return self.groups.groupby(["order", "layer", "group"], sort=True).logit.sum().reset_index()

    def forms_at(self, rank: int = 0) -> int | None:
        """The first layer after which the logit lens ranks the target at `rank` or better and keeps it there
        (-1: already the embedding; None: never)."""
        ranks = self.lens["rank"].to_numpy()
        for index in range(len(ranks)):
            if (ranks[index:] <= rank).all():
                return int(self.lens.layer.iloc[index])
        return None

    def figure(self, by: str = "kind"):
        """Layers on x, direct logits stacked by writer kind (`by="kind"`) or by group (`by="group"`), with the
        target's logit-lens rank per layer: a plotly `go.Figure` (`omni_lab.widgets.LogitLensView` draws it)."""
        from omni_lab.widgets import LogitLensView

        return LogitLensView(self, by=by).figure()


def _writer(component: str) -> str:
    return "routed experts" if component.startswith("expert ") or component == "routed bias" else component


def direct_logit_attribution(lab, prompt, target=None, *, groups="modality", reducer="model") -> LogitAttribution:
    """Decompose the target's first-token logit into the direct writes of every layer and position group.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` or a string.
        target: the answer (a string, its ids, an `ol.Target`) whose first token is explained; None for the model's
            own greedy answer.
        groups: a grouping of the one partition for the source positions.
        reducer: as in `run`.
    Returns:
        `LogitAttribution`.
    """
    import pandas as pd

    from ..capture.lens import DirectLogitCapture
    from ..partition import GroupBy
    from ..targets import Target, as_target, resolve_target

    prompt = lab.as_prompt(prompt)
    chosen = as_target(target)
    resolved = resolve_target(lab, prompt, Target(chosen.answer, tokens="first"), reducer)
    token = resolved.answer_ids[0]
    row = lab.prefill([prompt], capture=[DirectLogitCapture(token)], reducer=reducer)[0]
    detail = row.captures["direct_logit"]
    token_map = row.token_map
    units = GroupBy.of(groups).apply(token_map).restrict(token_map["position"] >= 0).complete()
    units.require_disjoint("direct_logit_attribution groups")
    group_of = units.position_ids(token_map)  # (positions,) unit of every LLM position
    labels = [unit.label for unit in units]
    modality = [unit.modality for unit in units]
    records = []
    split = {(int(r.layer), r.component) for r in detail.sources.itertuples()}
    for entry in detail.components.itertuples():
        if (entry.layer, entry.component) in split:
            continue
        unit = int(group_of[detail.position])
        records.append({"order": entry.order, "layer": entry.layer, "kind": entry.kind, "component": entry.component,
                        "group": labels[unit], "modality": modality[unit], "logit": entry.logit})  # fmt: skip
    order = dict(zip(detail.components.layer, detail.components.order, strict=False))
    sources = detail.sources.assign(unit=group_of[detail.sources.source.to_numpy()])
    for (layer, kind, component, unit), logit in (
        sources.groupby(["layer", "kind", "component", "unit"]).logit.sum().items()
    ):
        records.append({"order": order[layer], "layer": layer, "kind": kind, "component": component,
                        "group": labels[unit], "modality": modality[unit], "logit": float(logit)})  # fmt: skip
    table = pd.DataFrame(records).sort_values(["order", "component", "group"], kind="stable", ignore_index=True)
    return LogitAttribution(
        target_token=token,
        target_text=lab.tokenizer.decode([token]),
        components=detail.components,
        groups=table,
        lens=detail.lens.table(token),
        target_logit=detail.target_logit,
        residual_error=detail.residual_error,
        logit_error=detail.logit_error,
        detail=detail,
    )
