"""Token ablation against ShapesWorld's ground truth: does the twin read motion from the tokens that show it?

For a direction question, the video tokens "on the moving object's path" are the merged-grid cells (every tubelet) whose
pixel box, from the token map, overlaps the target's box in any frame; the control zeroes as many cells off that
path, static background first (cells no shape ever touches), still distractors only to make up the count. Each
answer is a greedy `lab.run` without token reduction, with `ol.ablate_tokens(mask)` zeroing the chosen rows' merged
embeddings before the language model prefills.
"""

from __future__ import annotations

import numpy as np

from .shapesworld import eval_seed, sample

MAX_NEW_TOKENS = 8


def _overlaps(token_map, rows: np.ndarray, box) -> np.ndarray:
    """For each of `rows` (indices), whether its pixel box overlaps `box` by a positive area."""
    return token_map.box_overlap(box)[rows] > 0


def _cells(token_map) -> tuple[np.ndarray, np.ndarray]:
    """Video rows and their cell id (row * cols + col)."""
    rows = np.flatnonzero(token_map.rows(modality="video"))
    cols = int(token_map["col"][rows].max()) + 1
    return rows, token_map["row"][rows] * cols + token_map["col"][rows]


def path_rows(prompt, truth) -> np.ndarray:
    """Bool mask over the prompt's rows: video cells (in every tubelet) that the target's box touches in some frame."""
    token_map = prompt.token_map
    rows, cells = _cells(token_map)
    touched = np.zeros(len(rows), dtype=bool)
    for box in truth.boxes:
        touched |= _overlaps(token_map, rows, box)
    on_path = np.isin(cells, np.unique(cells[touched]))
    mask = np.zeros(len(token_map), dtype=bool)
    mask[rows[on_path]] = True
    return mask


def static_rows(prompt, truth, count: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Bool mask over rows: `count` video cells (every tubelet) off the target's path, drawn with `rng`.

    Cells that overlap no shape in any frame (static background) come first; only when a clip has fewer of those
    than `count` are cells of the still distractors added to make the count equal.
    Returns:
        (mask, how many of the chosen cells show a still distractor).
    """
    token_map = prompt.token_map
    rows, cells = _cells(token_map)
    on_path = np.zeros(len(rows), dtype=bool)
    for box in truth.boxes:
        on_path |= _overlaps(token_map, rows, box)
    on_distractor = np.zeros(len(rows), dtype=bool)
    for shape in truth.distractors:
        on_distractor |= _overlaps(token_map, rows, shape.box)
    path_cells = np.unique(cells[on_path])
    distractor_cells = np.setdiff1d(np.unique(cells[on_distractor]), path_cells)
    background = np.setdiff1d(np.unique(cells), np.union1d(path_cells, distractor_cells))
    chosen = rng.permutation(background)[:count]
    from_distractors = rng.permutation(distractor_cells)[: count - len(chosen)]
    mask = np.zeros(len(token_map), dtype=bool)
    mask[rows[np.isin(cells, np.concatenate([chosen, from_distractors]))]] = True
    return mask, len(from_distractors)


def answer_with_zeroed_rows(lab, prompt, zeroed: np.ndarray) -> str:
    """Greedy answer (no token reduction) with the merged embeddings at the rows `zeroed` set to zero."""
    from ..capture.interventions import ablate_tokens

    interventions = [ablate_tokens(zeroed)] if zeroed.any() else None
    return lab.run(prompt, max_new_tokens=MAX_NEW_TOKENS, reducer=None, interventions=interventions).answer


def ablation_study(lab, n: int = 200, seed: int = 0, progress: bool = True):
    """Direction accuracy on `n` held-out clips: clean, moving-path cells zeroed, as many static cells zeroed.

    Returns:
        pandas DataFrame, one row per clip: seed, answer, clean, path, static (predictions), path_cells,
        static_cells (cells zeroed per tubelet), static_cells_on_distractors, video_tokens_zeroed_path,
        video_tokens_zeroed_static.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    for index in tqdm(range(n), desc="ablation", disable=not progress, mininterval=2.0):
        example_seed = eval_seed(seed, "video", index)
        example = sample(example_seed, family="video", task="direction")
        truth = example.truth["video"]
        prompt = example.prompt(lab)
        on_path = path_rows(prompt, truth)
        tubelets = int(prompt.token_map["tubelet"][prompt.token_map.rows(modality="video")].max()) + 1
        path_cells = int(on_path.sum()) // tubelets
        control, on_distractors = static_rows(prompt, truth, path_cells, np.random.default_rng(example_seed))
        rows.append(
            {
                "seed": example_seed,
                "answer": example.answer,
                "clean": answer_with_zeroed_rows(lab, prompt, np.zeros_like(on_path)),
                "path": answer_with_zeroed_rows(lab, prompt, on_path),
                "static": answer_with_zeroed_rows(lab, prompt, control),
                "path_cells": path_cells,
                "static_cells": int(control.sum()) // tubelets,
                "static_cells_on_distractors": on_distractors,
                "video_tokens_zeroed_path": int(on_path.sum()),
                "video_tokens_zeroed_static": int(control.sum()),
            }
        )
    return pd.DataFrame(rows)


def ablation_summary(results) -> dict:
    """Accuracy clean / path-zeroed / static-zeroed, and how often the control needed still-distractor cells."""
    return {
        "clean": float((results["clean"] == results["answer"]).mean()),
        "path": float((results["path"] == results["answer"]).mean()),
        "static": float((results["static"] == results["answer"]).mean()),
        "equal_count": float((results["static_cells"] == results["path_cells"]).mean()),
        "control_used_distractors": float((results["static_cells_on_distractors"] > 0).mean()),
        "mean_path_cells": float(results["path_cells"].mean()),
        "n": len(results),
    }
