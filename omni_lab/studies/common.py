"""What every study shares: prompts with references, answer scoring, fixed keep masks, writing rows out (and
`RowStore`, the keyed, chunk-by-chunk output that lets a study resume).

A study's unit of work is one (prompt, reducer, rate, intervention) -> one row, computed by a function of its
inputs only (the lab, the prompt, its encoded media, the reducer), so a study can later be mapped over a distributed
engine without rewriting it.
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..modalities import MEDIA
from ..reduction import Reduction


def as_prompt(lab, prompt, reference: str | None = None):
    """The `Prompt` a study runs: a `Prompt` as given, or a string through `lab.prompt`; never mutated.

    Args:
        lab: the `Lab`.
        prompt: a `Prompt` (from `lab.prompt(...)`) or a string (a text-only prompt).
        reference: an expected answer to attach; a given `Prompt` is then copied (`dataclasses.replace`), so the
            caller's object keeps its own `reference`.
    Returns:
        `Prompt`.
    """
    from ..prompt import Prompt

    if isinstance(prompt, str):
        return lab.prompt(prompt, reference=reference)
    if isinstance(prompt, Prompt):
        return prompt if reference is None else dataclasses.replace(prompt, reference=reference)
    raise OmniLabInputError(
        f"a study takes a Prompt (from lab.prompt(...)) or a string, got {type(prompt).__name__}; build it with "
        "lab.prompt(text, images=..., video=..., audio=..., reference=...)"
    )


def as_prompts(lab, prompts) -> list:
    """Prompts from `Prompt`s, strings, or (prompt, reference) pairs (the caller's prompts are left as they are)."""
    from ..prompt import Prompt

    if isinstance(prompts, (Prompt, str)):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)):
        raise OmniLabInputError(
            f"prompts={type(prompts).__name__}: pass a Prompt, a string, a list of them (or of (prompt, reference) "
            "pairs) or an ol.studies.Dataset"
        )
    out = []
    for entry in prompts:
        if isinstance(entry, tuple) and len(entry) == 2:
            out.append(as_prompt(lab, entry[0], reference=entry[1]))
        else:
            out.append(as_prompt(lab, entry))
    if not out:
        raise OmniLabInputError("a study needs at least one prompt")
    return out


def normalise_answer(text: str) -> str:
    """Lower case, surrounding whitespace and trailing punctuation removed, inner whitespace collapsed."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".!?")


def is_correct(answer: str, reference: str | None) -> bool | None:
    return None if reference is None else normalise_answer(answer) == normalise_answer(reference)


def first_token_target(lab, prompt, baseline_ids: list[int]) -> int:
    """The token whose probability margin studies follow: the reference's first token, else the unreduced answer's."""
    if prompt.reference:
        ids = lab.tokenizer.encode(prompt.reference.strip(), add_special_tokens=False)
        if ids:
            return int(ids[0])
    if not baseline_ids:
        raise OmniLabInputError("the unreduced run generated nothing; give the prompt a reference answer")
    return int(baseline_ids[0])


@dataclass
class Baseline:
    """What a single-prompt reduction study starts from: the prompt, its reducers by modality, its encoded media, the
    unreduced run (first-token logits kept) and the token whose margin the study follows."""

    prompt: object
    reducers: dict
    encoded: object
    full: object
    target: int


def unreduced_baseline(lab, prompt, reducer, study: str) -> Baseline:
    """Encode `prompt` once, run it unreduced, and pick the target token; refuse a reducer that reduces nothing."""
    from ..forward import resolve_reducers

    prompt = as_prompt(lab, prompt)
    reducers = resolve_reducers(reducer, lab.config)
    if not reducers:
        raise OmniLabInputError(f"{study} needs a reducer that acts on this prompt's media")
    encoded = lab.encode(prompt)
    full = lab.run(prompt, max_new_tokens=1, reducer=None, return_logits=True, encoded=encoded)
    return Baseline(prompt, reducers, encoded, full, first_token_target(lab, prompt, full.generated_ids))


def margin(logits: torch.Tensor, target: int) -> float:
    """log p(target) − max over other tokens of log p, from one `(vocab,)` logit vector."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    others = log_probs.clone()
    others[target] = -float("inf")
    return float(log_probs[target] - others.max())


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """KL(p_reference || p) in nats between two `(vocab,)` logit vectors."""
    reference = torch.log_softmax(reference_logits.float(), dim=-1)
    other = torch.log_softmax(logits.float(), dim=-1)
    return float((reference.exp() * (reference - other)).sum())


class KeepMask:
    """A reducer that applies fixed keep masks: {(modality, item): bool array over the item's tokens}."""

    def __init__(self, masks: dict, label: str = "keep mask"):
        self.masks = {key: np.asarray(value, dtype=bool) for key, value in masks.items()}
        self.modalities = tuple(dict.fromkeys(modality for modality, _ in self.masks))
        self.label = label

    def __repr__(self) -> str:
        return f"KeepMask({self.label})"

    def budget(self, item) -> int:
        return int(self.masks.get((item.modality, item.index), np.ones(item.num_tokens, bool)).sum())

    def __call__(self, item) -> Reduction:
        keep = self.masks.get((item.modality, item.index), np.ones(item.num_tokens, dtype=bool))
        return Reduction(keep=torch.from_numpy(keep.copy()))


def keep_masks_from(token_map, modalities) -> dict:
    """{(modality, item): kept flags} of a run's token map, for the given modalities."""
    df = token_map.df
    masks = {}
    for modality in modalities:
        rows = df[df.modality == modality]
        for item, group in rows.groupby("item", sort=True):
            masks[(modality, int(item))] = group.kept.to_numpy().copy()
    return masks


def kept_counts(token_map) -> dict:
    """Kept tokens per media modality and in total (prompt rows only)."""
    df = token_map.df
    prompt = df[df.modality != "generated"]
    counts = {f"kept_{m}": int(prompt[(prompt.modality == m)].kept.sum()) for m in MEDIA}
    counts["kept_tokens"] = int(prompt.kept.sum())
    counts["prompt_tokens"] = len(prompt)
    return counts


def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar (disabled when `enabled` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, disable=not enabled, leave=False)


def flatten(frame):
    """A copy of `frame` whose object columns hold only strings and None (what SQLite and Parquet store)."""
    flat = frame.copy()
    for column in flat.columns:
        if flat[column].dtype == object:
            flat[column] = flat[column].map(lambda value: value if isinstance(value, (str, type(None))) else str(value))
    return flat


def write_rows(frame, out, table: str) -> None:
    """Append a study's rows to SQLite (.sqlite / .db) or write them to Parquet (.parquet)."""
    if out is None:
        return
    path = Path(out)
    flat = flatten(frame)
    if path.suffix == ".parquet":
        flat.to_parquet(path, index=False)
    elif path.suffix in (".sqlite", ".db", ".sqlite3"):
        with sqlite3.connect(path) as connection:
            flat.to_sql(table, connection, if_exists="append", index=False)
    else:
        raise OmniLabInputError(f"out={str(out)!r}: write to a .parquet file or a .sqlite / .db database")


SQLITE_SUFFIXES = (".sqlite", ".db", ".sqlite3")


class RowStore:
    """Where a resumable study keeps its rows, keyed by cell: a SQLite table, or a Parquet file.

    Rows arrive chunk by chunk (`append`), written by one process only (the driver). SQLite appends each chunk to
    the table at once. Parquet cannot be appended to: each chunk goes to `<out>.parts/` and `finish` writes the
    whole table to `<out>` (through a temporary file) and removes the parts, so an interrupted study leaves its
    finished chunks there for the rerun to pick up. With `out=None` nothing is stored and nothing is resumed.
    """

    def __init__(self, out, table: str, key_columns: tuple[str, ...]):
        self.path = Path(out) if out is not None else None
        self.table, self.key_columns = table, key_columns
        if self.path is not None and self.path.suffix != ".parquet" and self.path.suffix not in SQLITE_SUFFIXES:
            raise OmniLabInputError(f"out={str(out)!r}: write to a .parquet file or a .sqlite / .db database")
        self.parts = self.path.with_name(self.path.name + ".parts") if self.path is not None else None

    def existing(self):
        """The rows already stored (DataFrame; empty when none), as the store holds them (see `flatten`)."""
        import pandas as pd

        frames = []
        if self.path is None:
            return pd.DataFrame()
        if self.path.suffix == ".parquet":
            files = ([self.path] if self.path.is_file() else []) + sorted(self.parts.glob("*.parquet"))
            frames = [pd.read_parquet(file) for file in files]
        elif self.path.is_file():
            with sqlite3.connect(self.path) as connection:
                found = connection.execute(
                    "select name from sqlite_master where type='table' and name=?", (self.table,)
                ).fetchone()
                if found:
                    frames = [pd.read_sql(f'select * from "{self.table}"', connection)]
        frames = [frame for frame in frames if len(frame)]
        if not frames:
            return pd.DataFrame()
        stored = pd.concat(frames, ignore_index=True)
        missing = [column for column in self.key_columns if column not in stored.columns]
        if missing:
            raise OmniLabInputError(
                f"out={str(self.path)!r} already holds a {self.table!r} table without the columns {missing} that "
                "key its rows (written by an older omni-lab, or by another study): write to a new file"
            )
        return stored

    def append(self, frame) -> None:
        """Store one chunk's rows."""
        if self.path is None or not len(frame):
            return
        flat = flatten(frame)
        if self.path.suffix == ".parquet":
            self.parts.mkdir(exist_ok=True)
            part = self.parts / f"part-{len(list(self.parts.glob('*.parquet'))):06d}.parquet"
            flat.to_parquet(part.with_suffix(".tmp"), index=False)
            part.with_suffix(".tmp").replace(part)
        else:
            with sqlite3.connect(self.path) as connection:
                flat.to_sql(self.table, connection, if_exists="append", index=False)

    def finish(self, frame) -> None:
        """Parquet: write the whole table to `out` and remove the parts. SQLite: nothing left to do."""
        if self.path is None or self.path.suffix != ".parquet":
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        flatten(frame).to_parquet(temporary, index=False)
        temporary.replace(self.path)
        if self.parts.is_dir():
            for part in self.parts.glob("*"):
                part.unlink()
            self.parts.rmdir()
