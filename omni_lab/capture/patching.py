"""Activation patching from one prompt into another in one call: `ol.patch_from(clean, points=..., positions=...)`.

    logits = lab.logits(corrupt, interventions=[ol.patch_from(clean)])        # every residual point, every position
    lab.run(corrupt, interventions=[ol.patch_from(clean_run, points="llm.layers.*.in",
                                                  positions="tubelet", units=["video 0 tubelet 3"])])

The source is a `Run` or `Prefill` that cached the points (`cache=[...]`), or a prompt: the Lab then runs it once
(a prefill caching the points, with the reducer of the run it patches). During the prompt's forward (step 0), the value at each point is replaced, at the
aligned positions, by the source's value there. Positions align one of two ways:

- `positions=None`: every position, one for one: the two token maps must lay their positions out alike (the same
  modality, item and media cell at every position: a prompt and its counterfactual with the same media sizes);
- `positions=` a grouping of the one partition (`omni_lab.partition`: "item", "tubelet", ("tubelet", "region"),
  {name: mask}, ...), optionally cut to some `units`: units are matched by label across the two maps and patched
  position for position in order; a unit missing from either map, or holding another number of positions, is
  refused with the labels named. A bool mask over the token map's rows is a single unit.

Points take values laid out as `(1, positions, width)`: `llm.embed`, `llm.layers.{i}.in`, any mixer's `.out`,
`attn.q|k|v`, `mamba.in_proj|ssm`, `llm.norm`, `llm.logits` (a router's `(logits, weights, indices)` is not one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..partition import GroupBy
from .interventions import Intervention, PatchContext

DEFAULT_POINTS = ("llm.layers.*.in",)
NOT_PATCHABLE = (".moe.router", ".mamba.conv")


@dataclass
class PatchFrom:
    """An activation patch from a source run or prompt (see the module header); expanded by the Lab into one
    `Intervention` per hook point (`interventions(lab)`)."""

    source: object
    points: tuple[str, ...] = DEFAULT_POINTS
    positions: object = None
    units: tuple[str, ...] | None = None
    _resolved: dict = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        where = "every position" if self.positions is None else f"positions={_describe(self.positions)}"
        units = "" if self.units is None else f", units={list(self.units)}"
        return f"patch_from({type(self.source).__name__}, points={list(self.points)}, {where}{units})"

    def interventions(self, lab, reducer="model") -> list[Intervention]:
        """One patch per hook point the pattern names, with the source's values (a source prompt is run once, with
        the same `reducer` as the run it patches)."""
        from .hooks import expand_names, hook_points

        names = expand_names(list(self.points), hook_points(lab.model))
        wrong = [name for name in names if name.endswith(NOT_PATCHABLE) or not name.startswith("llm.")]
        if wrong:
            raise OmniLabInputError(
                f"patch_from points {wrong[:3]}: patch LLM points whose value is (positions, width) per prompt, e.g. "
                "llm.layers.*.in, llm.layers.*.attn.out, llm.embed"
            )
        token_map, cache = self._source(lab, names, reducer)
        return [Intervention(name, self._patch(token_map, cache[name]), f"{self!r} at {name}") for name in names]

    def _source(self, lab, names: list[str], reducer):
        """(the source's token map, {hook name: (1, positions, width) value})."""
        key = (tuple(names), repr(reducer))
        if key in self._resolved:
            return self._resolved[key]
        from ..prompt import Prompt

        source = self.source
        if isinstance(source, (str, Prompt)):
            source = lab.prefill([source], cache=names, reducer=reducer)[0]
        cache = getattr(source, "cache", None)
        if cache is None or getattr(source, "token_map", None) is None:
            raise OmniLabInputError(
                f"patch_from source {type(self.source).__name__}: give a Prompt (or string), or a Run / Prefill that "
                f"cached the points (cache={names[:2]}...)"
            )
        missing = [name for name in names if name not in cache]
        if missing:
            raise OmniLabInputError(
                f"the patch_from source did not cache {missing[:3]}: run it with cache={list(self.points)}, or pass "
                "the prompt itself"
            )
        resolved = (source.token_map, {name: cache[name] for name in names})
        self._resolved[key] = resolved
        return resolved

    def _patch(self, source_map, source_value: torch.Tensor):
        alignments: dict = {}

        def patch(value: torch.Tensor, context: PatchContext) -> torch.Tensor:
            if context.step != 0:
                return value
            if not isinstance(value, torch.Tensor) or value.dim() != 3 or value.shape[0] != 1:
                raise OmniLabInputError(
                    f"patch_from at {context.name!r}: its value is not laid out (1, positions, width)"
                )
            mapping = alignments.get(id(context.token_map))
            if mapping is None:
                mapping = align(source_map, context.token_map, self.positions, self.units)
                alignments[id(context.token_map)] = mapping
            source_positions, target_positions = mapping
            if not len(target_positions):
                return value
            patched = value.clone()
            rows = source_value[0, torch.from_numpy(source_positions)].to(value.device, value.dtype)
            patched[0, torch.from_numpy(target_positions).to(value.device)] = rows
            return patched

        return patch


def patch_from(source, points=None, positions=None, units=None) -> PatchFrom:
    """Patch activations from `source` (a clean prompt, Run or Prefill) into the run this intervention is given to.

    Args:
        source: a `Prompt` or string (run once by the Lab), or a `Run` / `Prefill` that cached the points.
        points: hook names or glob patterns (default every layer's input: `llm.layers.*.in`, the residual stream).
        positions: None (every position, the maps laid out alike), a grouping of the one partition, or a bool mask
            over the token map's rows.
        units: with a grouping, the labels of the units to patch (default all).
    Returns:
        `PatchFrom`, to pass in `interventions=[...]`.
    """
    if points is None:
        points = DEFAULT_POINTS
    points = (points,) if isinstance(points, str) else tuple(points)
    if units is not None:
        if positions is None:
            raise OmniLabInputError("patch_from units=...: name the grouping they come from with positions=...")
        units = (units,) if isinstance(units, str) else tuple(str(unit) for unit in units)
    if positions is not None and not isinstance(positions, np.ndarray):
        GroupBy.of(positions)  # checks the grouping now
    return PatchFrom(source, points, positions, units)


def align(source_map, target_map, positions, units=None) -> tuple[np.ndarray, np.ndarray]:
    """(source positions, target positions) to patch, position for position (see the module header).

    Raises:
        OmniLabInputError: maps laid out differently with `positions=None`; units missing from one map or of
            different sizes.
    """
    if positions is None:
        mine, theirs = _layout(source_map), _layout(target_map)
        if mine != theirs:
            first = next(
                (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), min(len(mine), len(theirs))
            )
            raise OmniLabInputError(
                f"patch_from: the two prompts lay their positions out differently ({len(mine)} and {len(theirs)} "
                f"prompt positions; first difference at position {first}): give positions= a grouping such as "
                "'item' or 'tubelet' to align them unit by unit"
            )
        everything = np.arange(len(mine))
        return everything, everything
    if isinstance(positions, np.ndarray):
        positions = {"selected": positions}
    source_units, target_units = (_units(token_map, positions) for token_map in (source_map, target_map))
    wanted = list(target_units) if units is None else list(units)
    missing = [label for label in wanted if label not in source_units or label not in target_units]
    if missing:
        raise OmniLabInputError(
            f"patch_from: units {missing[:4]} are not in both prompts (source has {list(source_units)[:6]}, target "
            f"{list(target_units)[:6]}); name units both have"
        )
    sizes = [label for label in wanted if len(source_units[label]) != len(target_units[label])]
    if sizes:
        label = sizes[0]
        raise OmniLabInputError(
            f"patch_from: unit {label!r} holds {len(source_units[label])} positions in the source and "
            f"{len(target_units[label])} in the target, so they cannot be patched one for one; pick units of equal size"
        )
    source = np.concatenate([source_units[label] for label in wanted]) if wanted else np.zeros(0, np.int64)
    target = np.concatenate([target_units[label] for label in wanted]) if wanted else np.zeros(0, np.int64)
    return source.astype(np.int64), target.astype(np.int64)


def _layout(token_map) -> list[tuple]:
    """(modality, item, tubelet, row, col) of every prompt position (generated rows left out)."""
    prompt = token_map.by_position("modality") != "generated"
    columns = [token_map.by_position(name)[prompt] for name in ("modality", "item", "tubelet", "row", "col")]
    return list(zip(*[column.tolist() for column in columns], strict=True))


def _units(token_map, positions) -> dict[str, np.ndarray]:
    """{unit label: its prompt positions, ascending} of the grouping over `token_map`'s kept prompt rows."""
    prompt_rows = (token_map["position"] >= 0) & (token_map["modality"] != "generated")
    partition = GroupBy.of(positions).apply(token_map).restrict(prompt_rows)
    return {unit.label: np.sort(token_map["position"][unit.rows]) for unit in partition}


def _describe(positions) -> str:
    if isinstance(positions, np.ndarray):
        return f"mask of {int(positions.sum())} rows"
    if isinstance(positions, dict):
        return f"{{{', '.join(map(str, positions))}}}"
    return repr(positions)
