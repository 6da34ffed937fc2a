"""Compare mode: one question and its media, two arms (a reducer and its rate each), run in turn on the one Lab.

`compare` is the `/compare` endpoint: a generator that streams arm A's answer, then arm B's, then yields the side by
side table, the comparison as JSON and the figures: each arm's token-reduction map, the routing shift of each arm
against no reduction (`omni_lab.studies.routing_shift`'s table) and the modality-mass difference B - A of the
answer's tokens (the attention and Mamba mass the Ask tab's panel draws).

Arm B may be `MATCHED`: a `RandomDrop` that keeps exactly arm A's budget, the equal-budget random control that
`omni_lab.studies.matched_ablation` pairs with every reducer (built by its own `plan_arms`). The default pair is EVS
0.7 against that control.

The routing shift reuses the runs: each arm's routing of the prompt is compared with the routing of an unreduced
prefill of the same prompt (the unreduced arm's own run when there is one) by `Routing.compare(..., by="modality")`,
which is what `routing_shift(lab, prompt, reducer)` computes with two prefills of its own. An arm whose reducer acts
inside the LLM (PyramidDrop, SparseVLM) captures nothing: its part of the shift and the mass difference say why.
"""

from __future__ import annotations

import contextlib
import html
import time
from dataclasses import dataclass, field

import gradio as gr

from ..errors import OmniLabInputError, OmniLabModelError
from ..modalities import MEDIA, MODALITIES
from . import handlers
from .figures import message_figure, reduction_figure

MATCHED = "random-matched"
ARM_NAMES = ("A", "B")
DEFAULT_ARMS = (("evs", 0.7), (MATCHED, 0.7))
ARM_COLOURS = ("#1f77b4", "#d62728")
TEMPLATE = "plotly_white"  # the widgets' template (omni_lab.widgets.render.TEMPLATE)
NOT_CAPTURED = (
    "not captured: {} drops tokens inside the LLM, and captures cannot follow a sequence that shrinks mid-model"
)


@dataclass(frozen=True)
class ArmPlan:
    """One arm as asked: its name ("A" / "B"), the menu choice and rate, a label and the `lab.run(reducer=...)` value."""

    name: str
    choice: str
    rate: float
    label: str
    reducer: object

    @property
    def in_llm(self) -> bool:
        return bool(getattr(self.reducer, "in_llm", False))


@dataclass
class ArmResult:
    """One arm's run and its stats (`handlers.run_stats`, first token timed from the arm's own start)."""

    plan: ArmPlan
    run: object
    stats: dict


@dataclass
class Comparison:
    """What one compare request produced (kept in the session's state for "Download").

    Attributes:
        question: the question asked.
        model: the model source.
        arms: the two `ArmResult`s, A then B.
        routing_shift: DataFrame (arm, label, layer, modality, compared, changed, share_changed) of the arms that
            captured routing, each against no reduction; None when neither did.
        mass_difference: DataFrame (order, layer, kind, modality, mass_a, mass_b, difference) or None.
        unavailable: {"routing_shift" / "modality_mass_difference": why} for what could not be computed.
        request_s: seconds the whole request took.
        note: what the user should know about the inputs (a video without the sound track asked for), or None.
    """

    question: str
    model: str
    arms: list
    note: str | None = None
    routing_shift: object = None
    mass_difference: object = None
    unavailable: dict = field(default_factory=dict)
    request_s: float = 0.0

    def to_dict(self) -> dict:
        """JSON-able: the question, each arm's label, choice, rate and stats, the routing shift and mass difference
        rows (or why they are missing)."""
        arms = [
            {"arm": arm.plan.name, "label": arm.plan.label, "choice": arm.plan.choice, "rate": arm.plan.rate}
            | arm.stats
            for arm in self.arms
        ]
        shift = (
            {"against": "no reduction", "rows": self.routing_shift.to_dict("records")}
            if self.routing_shift is not None
            else {}
        )
        mass = {"b_minus_a": self.mass_difference.to_dict("records")} if self.mass_difference is not None else {}
        for key, entry in (("routing_shift", shift), ("modality_mass_difference", mass)):
            if key in self.unavailable:
                entry["unavailable"] = self.unavailable[key]
        return {
            **({"note": self.note} if self.note else {}),
            "question": self.question,
            "model": self.model,
            "arms": arms,
            "routing_shift": shift,
            "modality_mass_difference": mass,
            "request_s": round(self.request_s, 4),
        }


# --------------------------------------------------------------------------------------------------------- the arms
def arm_choices(name: str) -> list[tuple[str, str]]:
    """The (label, value) menu of one arm: the Ask tab's reducers, and for arm B the equal-budget random control."""
    choices = [(reducer, reducer) for reducer in handlers.REDUCERS]
    if name == "B":
        choices.append(("random at arm A's budget", MATCHED))
    return choices


def plan_arms(lab, reducer_a: str, rate_a: float, reducer_b: str, rate_b: float, seed: int = 0) -> list[ArmPlan]:
    """The two arms of a request.

    Args:
        lab: the loaded `Lab` ("model" means its own EVS rate).
        reducer_a, rate_a: arm A's reducer name (`handlers.REDUCERS`) and rate.
        reducer_b, rate_b: arm B's; `MATCHED` is a RandomDrop keeping exactly arm A's budget (rate_b unused).
        seed: seed of the random control.
    Returns:
        [`ArmPlan` A, `ArmPlan` B].
    Raises:
        OmniLabInputError: an unknown name, a bad rate, or `MATCHED` where arm A has no budget to match.
    """
    if reducer_a == MATCHED:
        raise OmniLabInputError(
            f"arm A cannot be {MATCHED!r}: it is arm B's random control at arm A's budget; pick a reducer for arm A"
        )
    first = _plan("A", reducer_a, rate_a, lab)
    if reducer_b != MATCHED:
        return [first, _plan("B", reducer_b, rate_b, lab)]
    from ..studies.matched import plan_arms as matched_arms

    target = first.reducer
    if reducer_a == "model":  # the model's own EVS, as an object with a budget
        from ..forward import resolve_reducers

        target = resolve_reducers("model", lab.config).get("video")
    if target is None or first.in_llm or not callable(getattr(target, "budget", None)):
        why = "drops nothing" if target is None else "acts inside the LLM" if first.in_llm else "has no token budget"
        raise OmniLabInputError(
            f"arm B {MATCHED!r} keeps arm A's budget at random, but arm A ({first.label}) {why}; pick a reducer "
            "that drops tokens before the LLM for arm A (e.g. evs), or another reducer for arm B"
        )
    control = matched_arms([target], [], seed)[-1]  # none, the reducer, its equal-budget RandomDrop
    return [first, ArmPlan("B", MATCHED, float(first.rate), control.label, control.reducer)]


def _plan(name: str, choice: str, rate, lab) -> ArmPlan:
    from ..studies.matched import arm_label

    if not isinstance(rate, (int, float)) or isinstance(rate, bool):
        raise OmniLabInputError(f"arm {name}'s rate must be a number in [0, 1), got {rate!r}")
    try:
        reducer = handlers.make_reducer(choice, rate)
    except OmniLabInputError as error:
        raise OmniLabInputError(f"arm {name}: {error}") from None
    if choice == "none":
        label = "no reduction"
    elif choice == "model":
        from ..forward import resolve_reducers

        own = resolve_reducers("model", lab.config).get("video")
        label = f"model ({arm_label(own)})" if own is not None else "model (no reduction)"
    else:
        label = arm_label(reducer)
    return ArmPlan(name, choice, float(rate), label, reducer)


# ------------------------------------------------------------------------------------------------------ comparing
def routing_shift(lab, prompt, arms: list[ArmResult]):
    """Each arm's routing shift against no reduction (`omni_lab.studies.routing_shift`'s table per arm).

    Returns:
        (DataFrame with "arm" and "label" columns first, or None; why it is missing or partial, or None).
    """
    import pandas as pd

    captured = [arm for arm in arms if arm.run.routing is not None]
    skipped = [arm for arm in arms if arm.run.routing is None]
    why = "; ".join(f"arm {arm.plan.name}: {_not_captured(arm.run)}" for arm in skipped) or None
    if not captured:
        return None, why
    full = next((arm.run.routing for arm in captured if not arm.run.reducers), None)
    if full is None:  # no unreduced arm: one prefill without reduction gives the reference routing
        full = lab.run(prompt, max_new_tokens=0, reducer=None, capture=["routing"]).routing
    frames = []
    for arm in captured:
        frame = arm.run.routing.compare(full, by="modality")
        frame.insert(0, "label", arm.plan.label)
        frame.insert(0, "arm", arm.plan.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), why


def mass_difference(arms: list[ArmResult]):
    """The answer's attention and Mamba mass per layer and modality in each arm, and B - A.

    Returns:
        (DataFrame: order, layer, kind, modality, mass_a, mass_b, difference; or None with why).
    """
    from omni_lab.widgets.attention_data import modality_mass

    missing = [arm for arm in arms if arm.run.attention_mass is None and arm.run.mamba_mass is None]
    if missing:
        return None, "; ".join(f"arm {arm.plan.name}: {_not_captured(arm.run)}" for arm in missing)
    first, second = (modality_mass(arm.run) for arm in arms)
    keys = ["order", "layer", "kind", "modality"]
    table = first.merge(second, on=keys, how="outer", suffixes=("_a", "_b")).fillna({"mass_a": 0.0, "mass_b": 0.0})
    table["difference"] = table.mass_b - table.mass_a
    rank = {modality: index for index, modality in enumerate(MODALITIES)}
    table = table.assign(rank=table.modality.map(lambda m: rank.get(m, len(rank))))
    return table.sort_values(["order", "rank"], kind="stable").drop(columns="rank").reset_index(drop=True), None


def _not_captured(run) -> str:
    names = sorted({type(r).__name__ for r in run.reducers.values() if getattr(r, "in_llm", False)})
    return NOT_CAPTURED.format(", ".join(names) or "the reducer")


# -------------------------------------------------------------------------------------------------------- figures
def arm_reduction_figure(arm: ArmResult):
    """The Ask tab's token-reduction panel of one arm, its title led by the arm."""
    figure = reduction_figure(arm.run)
    title = figure.layout.title.text or ""
    figure.update_layout(title_text=f"{arm.plan.name} ({html.escape(arm.plan.label)}): {title}")
    return figure


def routing_shift_figure(comparison: Comparison):
    """Share of surviving tokens whose top-k experts change, per MoE layer: a line per arm (all tokens) and a dotted
    line per arm and modality."""
    import plotly.graph_objects as go

    table = comparison.routing_shift
    if table is None:
        return message_figure("Routing shift", comparison.unavailable.get("routing_shift", "nothing captured"))
    figure = go.Figure()
    for index, name in enumerate(ARM_NAMES):
        mine = table[table.arm == name]
        if mine.empty:
            continue
        label = mine.label.iloc[0]
        for modality, rows in mine.groupby("modality", sort=False):
            whole = modality == "all"
            figure.add_scatter(
                x=rows.layer,
                y=rows.share_changed,
                mode="lines+markers",
                name=f"{name} · {label}" + ("" if whole else f" · {modality}"),
                line={"color": ARM_COLOURS[index], "dash": "solid" if whole else "dot", "width": 3 if whole else 1.5},
                customdata=rows[["changed", "compared"]].to_numpy(),
                hovertemplate="layer %{x}: %{y:.1%} changed (%{customdata[0]} of %{customdata[1]})<extra></extra>",
            )
    title = "Routing shift against no reduction: share of surviving tokens whose top-k experts change"
    if "routing_shift" in comparison.unavailable:
        title += f"<br><sup>{html.escape(comparison.unavailable['routing_shift'])}</sup>"
    figure.update_layout(
        title=title,
        xaxis={"title": "MoE layer", "type": "category"},
        yaxis={"title": "share changed", "tickformat": ".0%", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 60, "r": 20, "t": 70, "b": 40},
        height=380,
        template=TEMPLATE,
    )
    return figure


def mass_difference_figure(comparison: Comparison):
    """Heatmap: the answer's mass per layer (model order) and modality in arm B minus arm A."""
    import plotly.graph_objects as go

    table = comparison.mass_difference
    if table is None:
        return message_figure(
            "Modality mass difference", comparison.unavailable.get("modality_mass_difference", "nothing captured")
        )
    columns = table.drop_duplicates("order").sort_values("order")
    x = [f"{layer} {kind}" for layer, kind in zip(columns.layer, columns.kind, strict=True)]
    modalities = list(dict.fromkeys(table.modality))
    grid = table.pivot(index="modality", columns="order", values="difference").reindex(modalities)
    a, b = (arm.plan for arm in comparison.arms)
    figure = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=x,
            y=modalities,
            zmid=0.0,
            colorscale="RdBu_r",
            colorbar={"title": "B - A"},
            hovertemplate="%{x}, %{y}: %{z:+.3f}<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"Modality mass of the answer: B ({b.label}) - A ({a.label}), per layer",
        xaxis_title="layer (attention / mamba)",
        margin={"l": 70, "r": 20, "t": 60, "b": 60},
        height=320,
        template=TEMPLATE,
    )
    return figure


# ---------------------------------------------------------------------------------------------------------- table
TABLE_ROWS = (
    ("reducer", lambda s: s["label"]),
    ("answer", lambda s: s["answer"]),
    ("media tokens before", lambda s: _media(s["tokens_before"])),
    ("media tokens after", lambda s: _media(s["tokens_after"])),
    ("media tokens kept", lambda s: _percent(s.get("media_tokens_kept_fraction"))),
    ("prompt tokens before / after", lambda s: f"{s['tokens_total']['before']} / {s['tokens_total']['after']}"),
    ("time to first token (s)", lambda s: _seconds(s["timings"].get("first_token_s"))),
    ("encode (s)", lambda s: _seconds(s["timings"].get("encode_s"))),
    ("reduce (s)", lambda s: _seconds(s["timings"].get("reduce_s"))),
    ("prefill (s)", lambda s: _seconds(s["timings"].get("prefill_s"))),
    ("decode tokens / s", lambda s: "" if s.get("tokens_per_second") is None else f"{s['tokens_per_second']:.1f}"),
    ("prefill FLOPs saved", lambda s: _percent(s.get("prefill_flops_saved_fraction"))),
)


def _media(counts: dict) -> str:
    parts = [f"{modality} {counts[modality]}" for modality in MEDIA if counts.get(modality)]
    return ", ".join(parts) or "none"


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _seconds(value) -> str:
    return "" if value is None else f"{value:.3f}"


def side_by_side(comparison: Comparison) -> list[list[str]]:
    """Rows of the side-by-side table: [what, arm A, arm B] (the headers are `table_headers`)."""
    stats = [arm.stats | {"label": arm.plan.label} for arm in comparison.arms]
    rows = [[name, *(value(entry) for entry in stats)] for name, value in TABLE_ROWS]
    if comparison.routing_shift is not None:
        means = comparison.routing_shift[comparison.routing_shift.modality == "all"].groupby("arm").share_changed
        shares = means.mean().to_dict()
        rows.append(["routing shift vs none (mean over layers)", *(_percent(shares.get(n)) for n in ARM_NAMES)])
    return rows


def table_headers(comparison: Comparison | None = None) -> list[str]:
    return (
        ["", "arm A", "arm B"]
        if comparison is None
        else ["", *(f"{a.plan.name}: {a.plan.label}" for a in comparison.arms)]
    )


def side_by_side_frame(comparison: Comparison | None):
    """The side-by-side table as the DataFrame the app shows (empty, with placeholder headers, for None)."""
    import pandas as pd

    if comparison is None:
        return pd.DataFrame(columns=table_headers())
    return pd.DataFrame(side_by_side(comparison), columns=table_headers(comparison))


# ------------------------------------------------------------------------------------------------------- endpoint
def compare(
    lab,
    settings: handlers.PlaygroundSettings,
    question: str,
    image=None,
    video=None,
    audio=None,
    reducer_a: str = DEFAULT_ARMS[0][0],
    rate_a: float = DEFAULT_ARMS[0][1],
    reducer_b: str = DEFAULT_ARMS[1][0],
    rate_b: float = DEFAULT_ARMS[1][1],
    max_new_tokens: int = 16,
    thinking: bool = False,
    video_audio: bool = True,
):
    """Answer one question in two arms, one after the other on the one Lab, streaming both answers.

    Args:
        lab: the loaded `Lab`.
        settings: the playground's limits (the time limit covers both arms).
        question: the user's text.
        image, video, audio: None, paths or gradio file payloads (decoded once, for both arms).
        reducer_a, rate_a: arm A (`handlers.REDUCERS`; rate in [0, 1)).
        reducer_b, rate_b: arm B, or `MATCHED`: RandomDrop at arm A's budget.
        max_new_tokens: 1 to `settings.max_new_tokens`.
        thinking: let a reasoning model think first (refused for models without reasoning).
        video_audio: also give the model the uploaded video's own sound track, as `/ask` does (a video without one
            goes on without sound, and the comparison's "note" says so).
    Yields:
        (answer A, answer B, side-by-side table, comparison JSON, reduction map A, reduction map B, routing shift
        figure, modality-mass difference figure, `Comparison`): first a cleared set, then one per decoded token of
        A, then of B (the other outputs `gr.skip()`), then everything. The last item is the app's session state
        (not part of the API).
    Raises:
        gr.Error: any input problem (named), a model that cannot run, or the per-request time limit.
    """
    started = time.perf_counter()
    skip = gr.skip()
    yield "", "", side_by_side_frame(None), {}, None, None, None, None, None
    try:
        max_new_tokens = handlers._check_max_new_tokens(max_new_tokens, settings)
        plans = plan_arms(lab, reducer_a, rate_a, reducer_b, rate_b)
        prompt = handlers.build_prompt(lab, settings, question, image, video, audio, thinking, video_audio)
        note = handlers.silent_video_note(video, audio) if video_audio else None
        arms = []
        for slot, plan in enumerate(plans):
            arm_started = time.perf_counter()
            run = first_token_at = None
            stream = handlers.stream_answer(lab, settings, prompt, plan.reducer, max_new_tokens, started)
            with contextlib.closing(stream):
                for item in stream:
                    if isinstance(item, str):
                        answers = (item, skip) if slot == 0 else (skip, item)
                        yield *answers, *(skip,) * 7
                    else:
                        run, first_token_at = item
            first_token_s = None if first_token_at is None else first_token_at - arm_started
            stats = handlers.run_stats(lab, run, first_token_s, time.perf_counter() - arm_started)
            arms.append(ArmResult(plan, run, stats))
        comparison = Comparison(question or "", lab.source.spec, arms, note=note)
        comparison.routing_shift, shift_note = routing_shift(lab, prompt, arms)
        comparison.mass_difference, mass_note = mass_difference(arms)
        notes = {"routing_shift": shift_note, "modality_mass_difference": mass_note}
        comparison.unavailable = {key: note for key, note in notes.items() if note}
        figure_set = (
            arm_reduction_figure(arms[0]),
            arm_reduction_figure(arms[1]),
            routing_shift_figure(comparison),
            mass_difference_figure(comparison),
        )
        comparison.request_s = time.perf_counter() - started
        table = side_by_side_frame(comparison)
    except (OmniLabInputError, OmniLabModelError) as error:
        message = html.escape(str(error), quote=False)  # gr.Error renders HTML: escape user-given names
        raise gr.Error(message, title="Cannot compare on this request", print_exception=False) from None
    yield arms[0].run.answer, arms[1].run.answer, table, comparison.to_dict(), *figure_set, comparison
