"""RunOptions: how a prompt is run, as one frozen value shared by `Lab.run`, `Lab.stream` and the studies.

    options = ol.RunOptions(max_new_tokens=16, reducer=ol.reducers.EVS(0.5), capture=["routing"])
    run = lab.run(p, options)                         # or lab.run(p, max_new_tokens=16, ...): the same fields
    run = lab.run(p, options, reducer=None)           # a copy with one field changed
    options.replace(max_new_tokens=4)

Every field is checked when the value is made, so a bad option is refused before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from . import validate
from .errors import OmniLabInputError


@dataclass(frozen=True)
class RunOptions:
    """The options of one run.

    Attributes:
        max_new_tokens: generation stops here or at the model's end tokens.
        do_sample: sample instead of greedy argmax (with temperature, top_k, top_p; `seed` for repeatability).
        temperature, top_k, top_p, seed: sampling settings (transformers' own logits warpers).
        reducer: "model" (the model's own EVS at `config.video_pruning_rate`), None (no reduction), a reducer (acts
            on the modalities it names), or {"video": reducer, "audio": reducer, ...}; an in-LLM reducer (`FastV`)
            alone or as {"llm": FastV(...), "video": ...}.
        return_logits: keep the logits each new token was chosen from (`run.logits`).
        capture: names or capture kinds: "routing", "attention_mass", "mamba_mass", "residual", a kind such as
            `ol.capture.attention_mass(segments="tubelet", queries="answer")`, or one registered with
            `ol.capture.register`.
        cache: hook names or glob patterns (`lab.hook_names()`) whose values to keep in `run.cache`.
        interventions: `ol.ablate_tokens(...)`, `ol.ablate_experts(...)`, `ol.force_experts(...)`, `ol.patch(...)`;
            their hooks are removed when the run ends, also when it raises.
        cache_device, cache_dtype: where cached tensors go ("cpu") and their dtype (e.g. torch.float16).
        capture_budget: bytes the captures may take (default `omni_lab.capture.BUDGET_BYTES`, 8 GiB); past it the run
            is refused with the estimate before anything runs.
        thinking_budget: the most reasoning tokens of a thinking prompt (`thinking=True`): when the model has not
            closed its reasoning after this many tokens, `</think>` is written as the next token and the answer
            follows (the release's client-side reasoning budget; it counts within `max_new_tokens`). None: no
            budget. Prompts without thinking are not affected.
    """

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    reducer: object = "model"
    return_logits: bool = False
    capture: object = None
    cache: object = None
    interventions: object = None
    cache_device: object = "cpu"
    cache_dtype: object = None
    capture_budget: int | None = None
    thinking_budget: int | None = None

    def __post_init__(self):
        check = object.__setattr__
        check(self, "max_new_tokens", validate.number("max_new_tokens", self.max_new_tokens, low=0, integer=True))
        check(self, "do_sample", validate.flag("do_sample", self.do_sample))
        check(self, "temperature", float(validate.number("temperature", self.temperature, low=0, low_open=True)))
        check(self, "top_p", float(validate.number("top_p", self.top_p, low=0, low_open=True, high=1)))
        top_k = validate.number("top_k", self.top_k, low=0, integer=True, fix="pass 0 (off) or a count >= 1")
        check(self, "top_k", top_k)
        check(self, "seed", validate.number("seed", self.seed, low=0, integer=True, allow_none=True))
        check(self, "return_logits", validate.flag("return_logits", self.return_logits))
        if self.capture_budget is not None:
            check(self, "capture_budget", validate.number("capture_budget", self.capture_budget, low=1, integer=True))
        if self.thinking_budget is not None:
            budget = validate.number("thinking_budget", self.thinking_budget, low=0, integer=True, allow_none=True)
            check(self, "thinking_budget", budget)
        if isinstance(self.interventions, (list, tuple)):
            check(self, "interventions", tuple(self.interventions))

    @classmethod
    def of(cls, options: RunOptions | None = None, **changes) -> RunOptions:
        """`options` (default `RunOptions()`) with `changes` applied: what `Lab.run(prompt, options, **changes)` runs.

        Raises:
            OmniLabInputError: `options` is not a RunOptions, or a change names no field.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, RunOptions):
            raise OmniLabInputError(
                f"options={options!r}: pass an ol.RunOptions(...) or give the options by name "
                "(e.g. run(prompt, max_new_tokens=16))"
            )
        return options.replace(**changes) if changes else options

    def replace(self, **changes) -> RunOptions:
        """A copy with some fields changed (checked like the constructor)."""
        names = {field.name for field in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise OmniLabInputError(f"unknown run option(s) {unknown}; the options are {sorted(names)}")
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able: numbers and flags as they are, reducers, captures and interventions by their repr."""
        plain = (int, float, bool, str, type(None))
        out = {}
        for field in fields(self):
            name, value = field.name, getattr(self, field.name)
            if isinstance(value, dict):
                out[name] = {str(key): repr(entry) for key, entry in value.items()}
            elif isinstance(value, (list, tuple)):
                out[name] = [entry if isinstance(entry, plain) else repr(entry) for entry in value]
            else:
                out[name] = value if isinstance(value, plain) else repr(value)
        return out


def per_row(name: str, value, rows: int, kind) -> list:
    """One value per batch row: a list of `rows` values as given, else `value` for every row.

    Args:
        name: the argument's name (for the error).
        value: the argument.
        rows: the batch size.
        kind: the type a single value has (a list of it is per row), or None when any list is per row.
    Raises:
        OmniLabInputError: a per-row list of the wrong length.
    """
    if isinstance(value, (list, tuple)) and (kind is None or all(isinstance(v, kind) or v is None for v in value)):
        if len(value) != rows:
            raise OmniLabInputError(f"{name}: {len(value)} values for {rows} rows; give one value, or one per row")
        return list(value)
    return [value] * rows


def per_row_interventions(interventions, rows: int) -> list:
    """One intervention list per batch row: a list of lists (or None) as given, else the one list for every row."""
    if (
        isinstance(interventions, (list, tuple))
        and interventions
        and all(isinstance(entry, (list, tuple)) or entry is None for entry in interventions)
    ):
        return per_row("interventions", list(interventions), rows, None)
    return [interventions] * rows
