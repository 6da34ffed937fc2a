"""`Dataset`: a study's inputs as plain data, so any process holding a lab can build the prompts itself.

A row is a dict of JSON-able values: `text` with optional `images` (paths), `video` (a path), `audio` (a path),
`system` and `reference`; or a ShapesWorld example (`seed`, `family`, optionally `task`), whose media, question and answer are drawn
from the seed on whichever process builds it. Every row has a stable `key` (given, or derived from the row's
content), which studies write next to their rows so that a rerun skips what is already done. Rows never hold
tensors: a `Dataset` of 10,000 videos is a list of paths, cheap to ship to Ray workers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import OmniLabInputError

FIELDS = ("key", "text", "images", "video", "audio", "system", "reference", "seed", "family", "task")


def _row_key(row: dict) -> str:
    """A stable key from a row's content: `shapesworld/{family}/{seed}` (`.../{task}/{seed}` with a task), else a hash
    of its fields."""
    if row.get("seed") is not None:
        task = f"{row['task']}/" if row.get("task") is not None else ""
        return f"shapesworld/{row['family']}/{task}{row['seed']}"
    content = json.dumps({name: row.get(name) for name in FIELDS if name != "key"}, sort_keys=True)
    return "sha1/" + hashlib.sha1(content.encode()).hexdigest()[:16]


def _clean(record: dict, position: int, base: Path | None) -> dict:
    """One validated row: known fields only, media paths as strings (relative ones resolved against `base`)."""
    if not isinstance(record, dict):
        raise OmniLabInputError(f"dataset record {position} is a {type(record).__name__}; give dicts with {FIELDS}")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise OmniLabInputError(f"dataset record {position} has unknown fields {unknown}; use only {FIELDS}")
    row = {name: record.get(name) for name in FIELDS}
    if row["seed"] is not None:
        from ..toy.shapesworld import FAMILIES, TASKS

        if row["family"] not in FAMILIES:
            raise OmniLabInputError(
                f"dataset record {position}: a ShapesWorld row needs family= one of {FAMILIES}, got {row['family']!r}"
            )
        if row["task"] is not None and row["task"] not in TASKS[row["family"]]:
            raise OmniLabInputError(
                f"dataset record {position}: task={row['task']!r} is not a {row['family']} task; choose from "
                f"{TASKS[row['family']]} (or leave it out: the seed draws one)"
            )
        row["seed"] = int(row["seed"])
    elif row["task"] is not None:
        raise OmniLabInputError(f"dataset record {position}: `task` names a ShapesWorld task; give it with `seed`")
    elif not isinstance(row["text"], str) or not row["text"].strip():
        raise OmniLabInputError(f"dataset record {position} needs a non-empty `text` (or a ShapesWorld `seed`)")

    def path(value):
        if value is None or (isinstance(value, float) and value != value):  # None, or NaN from a Parquet column
            return None
        value = Path(str(value)).expanduser()
        return str(base / value if base is not None and not value.is_absolute() else value)

    images = row["images"]
    if images is not None and not isinstance(images, (str, Path)):
        images = [path(image) for image in list(images)]
    elif images is not None:
        images = [path(images)]
    row["images"] = images or None
    row["video"], row["audio"] = path(row["video"]), path(row["audio"])
    for name in ("text", "system", "reference"):
        if row[name] is not None and not isinstance(row[name], str):
            row[name] = None if isinstance(row[name], float) and row[name] != row[name] else str(row[name])
    row["key"] = str(row["key"]) if row["key"] is not None else _row_key(row)
    return row


@dataclass(frozen=True)
class Dataset:
    """Rows of study inputs as data (texts, media paths, ShapesWorld seeds, reference answers).

    Attributes:
        rows: one dict per prompt with the fields `FIELDS` (unused ones None) and a unique `key`.
    """

    rows: tuple

    def __post_init__(self):
        keys = [row["key"] for row in self.rows]
        if len(set(keys)) != len(keys):
            duplicated = sorted({key for key in keys if keys.count(key) > 1})[:3]
            raise OmniLabInputError(f"dataset keys must be unique; repeated: {duplicated}. Give each record a `key`")
        if not self.rows:
            raise OmniLabInputError("a dataset needs at least one row")

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_records(cls, records, base: str | Path | None = None) -> Dataset:
        """A dataset from dicts (or plain strings: text-only prompts).

        Args:
            records: iterable of dicts with any of `FIELDS` (`text` required unless `seed` and `family` name a
                ShapesWorld example), or strings.
            base: directory that relative media paths are resolved against.
        Returns:
            `Dataset`.
        """
        base = Path(base) if base is not None else None
        rows = [
            _clean({"text": record} if isinstance(record, str) else record, position, base)
            for position, record in enumerate(records)
        ]
        return cls(tuple(rows))

    @classmethod
    def shapesworld(cls, n: int, families=("image", "video", "audio", "omni"), seed: int = 0, tasks=None) -> Dataset:
        """`n` held-out ShapesWorld examples, families (or tasks) taken in turn (their question, media and answer).

        Args:
            n: number of rows.
            families: ShapesWorld families to cycle through ("image", "video", "audio", "omni", "text", and the hard
                tier's "events", "sync": `shapesworld.FAMILIES`); each seed draws its task.
            seed: evaluation run seed (0-999); rows use `shapesworld.eval_seed(seed, family, index)`.
            tasks: instead of families, "family/task" names to cycle through ("events/flash_colour").
        Returns:
            `Dataset` whose rows carry `seed`, `family` (and `task`); the reference answer is the example's.
        """
        from ..toy.shapesworld import FAMILIES, eval_seed

        if tasks is not None:
            tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
            if not tasks or not all(isinstance(t, str) and t.count("/") == 1 for t in tasks):
                raise OmniLabInputError(f"tasks={tasks!r}: give names such as 'events/flash_colour'")
            turns = [tuple(name.split("/")) for name in tasks]
        else:
            families = (families,) if isinstance(families, str) else tuple(families)
            if not families or set(families) - set(FAMILIES):
                raise OmniLabInputError(f"families={families!r}: choose from {FAMILIES}")
            turns = [(family, None) for family in families]
        if int(n) < 1:
            raise OmniLabInputError(f"n={n}: a dataset needs at least one row")
        records = []
        for i in range(int(n)):
            family, task = turns[i % len(turns)]
            records.append({"seed": eval_seed(seed, family, i // len(turns)), "family": family, "task": task})
        return cls.from_records(records)

    @classmethod
    def from_file(cls, path: str | Path) -> Dataset:
        """A dataset from a JSONL file (one record per line) or a Parquet file (one record per row).

        Relative media paths are resolved against the file's directory.
        """
        path = Path(path)
        if not path.is_file():
            raise OmniLabInputError(f"dataset file {str(path)!r} does not exist")
        if path.suffix in (".jsonl", ".ndjson"):
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            try:
                records = [json.loads(line) for line in lines]
            except json.JSONDecodeError as error:
                raise OmniLabInputError(f"{path}: not JSON Lines ({error}); write one JSON object per line") from None
        elif path.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            records = [{k: v for k, v in record.items() if v is not None} for record in frame.to_dict("records")]
        else:
            raise OmniLabInputError(f"dataset file {str(path)!r}: read .jsonl or .parquet files")
        return cls.from_records(records, base=path.parent)

    # ---------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        """Row `index` (a dict), or a `Dataset` of the rows a slice selects."""
        if isinstance(index, slice):
            return Dataset(self.rows[index])
        return self.rows[index]

    @property
    def keys(self) -> list[str]:
        return [row["key"] for row in self.rows]

    def prompt(self, lab, i: int):
        """Build prompt `i` with `lab` (on whichever process holds the lab), its reference attached.

        Args:
            lab: the `Lab`.
            i: row index.
        Returns:
            `Prompt`.
        """
        return build_prompt(lab, self.rows[i])


def build_prompt(lab, row: dict):
    """The `Prompt` of one dataset row (a ShapesWorld example drawn from its seed, or text and media paths)."""
    if row.get("seed") is not None:
        from ..toy.shapesworld import sample

        example = sample(row["seed"], row["family"], task=row.get("task"))
        return example.prompt(lab, reference=row.get("reference") or example.answer)
    return lab.prompt(
        row["text"],
        images=row.get("images"),
        video=row.get("video"),
        audio=row.get("audio"),
        system=row.get("system"),
        reference=row.get("reference"),
    )
