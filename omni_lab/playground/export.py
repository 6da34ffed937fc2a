"""Export a run ("Download" in the Ask and Compare tabs): one self-contained HTML report and one JSON file.

    paths = export_run(lab, run, stats)                 # [report.html, run.json] of one Ask-tab answer
    paths = export_comparison(lab, comparison)          # the same for a compare request, both arms

The report is the Dashboard's page (`omni_lab.widgets.Dashboard`: summary, token reduction, expert routing, modality
mass, audio; plotly.js inline, pictures as data URIs, nothing fetched) under the question, the answer(s) and the
stats; in compare mode both arms side by side, the routing shift and the modality-mass difference, then each arm's
Dashboard. The JSON is `Run.to_dict()` (with the playground's first-token and request timings) and what reproduces
it: `omni_lab.provenance.provenance` (model source and the sha256 of its files, omni-lab / transformers / torch
versions, reducers and decoding options, the sha256 of the processor's inputs).

The app keeps the last answer of each tab in the session's state (`gr.State`, dropped after `KEEP_S`) only so that
"Download" can write it; files are written under `EXPORT_ROOT` (folders older than `KEEP_S` are removed at the next
export) and gradio serves copies from its own cache.
"""

from __future__ import annotations

import html
import inspect
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from ..errors import OmniLabInputError
from ..provenance import provenance
from . import handlers

EXPORT_ROOT = Path(tempfile.gettempdir()) / "omni-lab-exports"
KEEP_S = 3600.0
SUMMARY_KEYS = (
    ("media tokens kept", "media_tokens_kept_fraction"),
    ("prefill FLOPs saved", "prefill_flops_saved_fraction"),
    ("decode tokens / s", "tokens_per_second"),
)


# ------------------------------------------------------------------------------------------------------- the JSON
def run_json(lab, run, stats: dict | None = None) -> dict:
    """`run.to_dict()` with the playground's timings (first token, request) and its provenance.

    Args:
        lab: the `Lab` that ran.
        run: the `Run`.
        stats: `handlers.run_stats` of the run (its "timings" add first_token_s and request_s), or None.
    Returns:
        JSON-able dict: the run's summary and "provenance".
    """
    record = run.to_dict()
    if stats:
        record["timings"] = dict(stats["timings"])
    return record | {"provenance": provenance(lab, run)}


def comparison_json(lab, comparison) -> dict:
    """`Comparison.to_dict()` with each arm's run provenance and the model's provenance (versions, files)."""
    record = comparison.to_dict()
    for entry, arm in zip(record["arms"], comparison.arms, strict=True):
        entry["provenance"] = provenance(lab, arm.run)["run"]
    return record | {"provenance": provenance(lab)}


def _dumps(record: dict) -> str:
    return json.dumps(_finite(record), indent=2, ensure_ascii=False)


def _finite(value):
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(entry) for key, entry in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(entry) for entry in value]
    return value


# ------------------------------------------------------------------------------------------------------ the report
def _table(rows: list[list], headers: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in headers) if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table class='stats'>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _details(summary: str, record: dict) -> str:
    return f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(_dumps(record))}</pre></details>"


def _run_rows(stats: dict) -> list[list]:
    timings = stats.get("timings", {})
    rows = [
        ["answer", stats.get("answer", "")],
        ["reducers", ", ".join(f"{k}: {v}" for k, v in stats.get("reducers", {}).items()) or "none"],
        ["tokens before", json.dumps(stats.get("tokens_before", {}))],
        ["tokens after", json.dumps(stats.get("tokens_after", {}))],
    ]
    rows += [[f"{key[:-2].replace('_', ' ')} (s)", f"{value:.3f}"] for key, value in timings.items()]
    for name, key in SUMMARY_KEYS:
        value = stats.get(key)
        if value is not None:
            rows.append([name, f"{100 * value:.1f}%" if key.endswith("fraction") else f"{value:g}"])
    return rows


def _model_rows(record: dict) -> list[list]:
    model, versions = record["model"], record["versions"]
    rows = [["model", f"{model['source']} ({model['kind']}, {model['device']}, {model['dtype']})"]]
    rows += [[name.replace("_", "-"), version] for name, version in versions.items()]
    for entry in model.get("files", []):
        rows.append([f"sha256 {entry['name']}", entry["sha256"]])
    if model.get("weights_sha256"):
        rows.append(["sha256 of the weights", model["weights_sha256"]])
    return rows


def _dashboard_sections(run, prefix: str = "") -> list[tuple[str, object]]:
    from omni_lab.widgets import Dashboard

    return [(f"{prefix}{heading}", figure) for heading, figure in Dashboard(run).sections()]


def run_report(lab, run, stats: dict, record: dict | None = None) -> str:
    """The HTML report of one answer: question, answer and stats, the model and versions, then the Dashboard's page.

    Args:
        lab: the `Lab` that ran.
        run: the `Run`.
        stats: its `handlers.run_stats`.
        record: its `run_json` (computed when None).
    Returns:
        the page's HTML text.
    """
    from omni_lab.widgets import render

    record = record or run_json(lab, run, stats)
    question = _table([["question", run.prompt.text], *_run_rows(stats)])
    model = _table(_model_rows(record["provenance"]))
    sections = [
        ("Question and answer", question),
        ("Model and versions", model + _details("The run as JSON (also in the downloaded .json)", record)),
        *_dashboard_sections(run),
    ]
    return render.page(f"omni-lab run: {run.prompt.text[:80]}", sections, _notes(lab, run.prompt.text))


def comparison_report(lab, comparison, record: dict | None = None) -> str:
    """The HTML report of a compare request: the arms side by side, the routing shift and the modality-mass
    difference, the model and versions, then each arm's Dashboard.

    Returns:
        the page's HTML text.
    """
    from omni_lab.widgets import render

    from .compare import mass_difference_figure, routing_shift_figure, side_by_side, table_headers

    record = record or comparison_json(lab, comparison)
    sections = [
        ("Question", _table([["question", comparison.question], ["model", comparison.model]])),
        ("Arms side by side", _table(side_by_side(comparison), table_headers(comparison))),
        ("Routing shift", routing_shift_figure(comparison)),
        ("Modality mass difference", mass_difference_figure(comparison)),
        ("Model and versions", _table(_model_rows(record["provenance"])) + _details("The comparison as JSON", record)),
    ]
    for arm in comparison.arms:
        sections += _dashboard_sections(arm.run, prefix=f"Arm {arm.plan.name} ({arm.plan.label}): ")
    return render.page(f"omni-lab comparison: {comparison.question[:80]}", sections, _notes(lab, comparison.question))


def _notes(lab, question: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return html.escape(f"{lab.source.spec} · exported {stamp} · Q: {question!r}")


# ------------------------------------------------------------------------------------------------------- the files
def _folder(kind: str) -> Path:
    """A new folder under `EXPORT_ROOT`, after removing folders older than `KEEP_S`."""
    EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in EXPORT_ROOT.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=EXPORT_ROOT))


def _write(folder: Path, stem: str, page: str, record: dict) -> list[Path]:
    report, data = folder / f"{stem}.html", folder / f"{stem}.json"
    report.write_text(page, encoding="utf-8")
    data.write_text(_dumps(record) + "\n", encoding="utf-8")
    return [report, data]


def export_run(lab, run, stats: dict, folder=None) -> list[Path]:
    """Write one answer's HTML report and JSON.

    Args:
        lab: the `Lab` that ran.
        run: the `Run`.
        stats: its `handlers.run_stats`.
        folder: where to write (default: a new folder under `EXPORT_ROOT`).
    Returns:
        [the .html report, the .json record].
    """
    record = run_json(lab, run, stats)
    folder = Path(folder) if folder is not None else _folder("run")
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder, f"omni-lab-run-{time.strftime('%Y%m%d-%H%M%S')}", run_report(lab, run, stats, record), record)


def export_comparison(lab, comparison, folder=None) -> list[Path]:
    """Write a compare request's HTML report and JSON (both arms). Returns: [the .html, the .json]."""
    record = comparison_json(lab, comparison)
    folder = Path(folder) if folder is not None else _folder("compare")
    folder.mkdir(parents=True, exist_ok=True)
    page = comparison_report(lab, comparison, record)
    return _write(folder, f"omni-lab-compare-{time.strftime('%Y%m%d-%H%M%S')}", page, record)


# ----------------------------------------------------------------------------------------------------- the events
def ask_keeping_run(lab, settings, *args, **kwargs):
    """`handlers.ask`, with the session's state (the last answer's `(run, stats)`, None while a request runs or after
    it failed) as one more output. Same arguments as `handlers.ask`, so `/ask` keeps its parameters."""
    kept = []
    outputs = handlers.ask(lab, settings, *args, on_run=lambda run, stats: kept.append((run, stats)), **kwargs)
    for index, output in enumerate(outputs):
        yield (*output, kept[-1] if kept else None if index == 0 else gr.skip())


ask_keeping_run.__signature__ = inspect.signature(handlers.ask)  # gradio names /ask's parameters from it


def download_run(lab, kept) -> list[str]:
    """The "Download" event of the Ask tab: the files of the session's last answer.

    Raises:
        gr.Error: no answer to export yet.
    """
    if kept is None:
        raise gr.Error(
            "Download writes this tab's last complete answer: ask, and let the answer and its panels finish.",
            title="Nothing to export yet",
        )
    return [str(path) for path in export_run(lab, *kept)]


def download_comparison(lab, comparison) -> list[str]:
    """The "Download" event of the Compare tab: the files of the session's last comparison."""
    if comparison is None:
        raise gr.Error(
            "Download writes this tab's last complete comparison: compare, and let both answers and the panels finish.",
            title="Nothing to export yet",
        )
    try:
        return [str(path) for path in export_comparison(lab, comparison)]
    except OmniLabInputError as error:
        raise gr.Error(html.escape(str(error), quote=False), title="Cannot export") from None


def download_controls(prefix: str):
    """A "Download" button and the file list it fills (elem ids `{prefix}-download`, `{prefix}-files`)."""
    button = gr.Button("Download", elem_id=f"{prefix}-download", size="sm")
    files = gr.File(
        label="Exported: HTML report and JSON",
        file_count="multiple",
        interactive=False,
        elem_id=f"{prefix}-files",
        height=120,
    )
    return button, files


def session_state():
    """The session state that holds a tab's last answer for Download (dropped after `KEEP_S`)."""
    return gr.State(None, time_to_live=KEEP_S)
