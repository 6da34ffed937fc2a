"""Argument checks at the public API's boundary: one message shape for every argument.

Each check returns the value normalised (a numpy or torch scalar becomes a Python number) or raises
`OmniLabInputError` saying `name=<what was given>: <what is wrong>; <what to pass>`, so a bad argument never reaches
torch, the tokenizer or FFmpeg and never fails silently.
"""

from __future__ import annotations

import math
import numbers

from .errors import OmniLabInputError


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(name: str, value, problem: str, fix: str) -> OmniLabInputError:
    """The error every check raises: `name=value: problem; fix`."""
    return OmniLabInputError(f"{name}={_shown(value)}: {problem}; {fix}")


def scalar(value):
    """A Python number from a Python, numpy or one-element torch scalar; None for anything else (bools included)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, numbers.Real):
        return value.item() if hasattr(value, "item") else value
    if type(value).__module__.startswith(("torch", "numpy")) and getattr(value, "ndim", None) == 0:
        item = value.item()
        return item if isinstance(item, numbers.Real) and not isinstance(item, bool) else None
    return None


def number(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
    fix: str = "",
):
    """A finite real (an int when `integer`) in [low, high] (low excluded when `low_open`), or None if allowed."""
    if value is None and allow_none:
        return None
    kind = "an integer" if integer else "a number"
    bounds = _bounds(low, high, low_open)
    fix = fix or f"pass {kind}{bounds}" + (" or None" if allow_none else "")
    given = scalar(value)
    if given is None:
        raise fail(name, value, f"is a {type(value).__name__}, not {kind}", fix)
    if not math.isfinite(given):
        raise fail(name, value, "is not finite", fix)
    if integer:
        if given != int(given) or (isinstance(given, float) and abs(given) > 2**53):
            raise fail(name, value, "is not a whole number", fix)
        given = int(given)
    if low is not None and (given < low or (low_open and given == low)):
        raise fail(name, value, f"is below the allowed range{bounds}", fix)
    if high is not None and given > high:
        raise fail(name, value, f"is above the allowed range{bounds}", fix)
    return given


def _bounds(low, high, low_open) -> str:
    if low is None and high is None:
        return ""
    left = "(" if low_open else "["
    return f" in {left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"


def flag(name: str, value) -> bool:
    """A bool (numpy bools too)."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise fail(name, value, f"is a {type(value).__name__}", "pass True or False")


def text(name: str, value, *, allow_none: bool = False) -> str | None:
    """A string that encodes as UTF-8 (a lone surrogate, e.g. from a bad decode, does not)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise fail(name, value, f"is a {type(value).__name__}, not a string", "pass a str")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise fail(
            name,
            value,
            f"contains a lone surrogate {value[error.start]!r} at character {error.start}, which is not valid text",
            "decode the source text with errors='replace' or remove the character",
        ) from None
    return value


def choice(name: str, value, options) -> str:
    """One of `options` (strings)."""
    if isinstance(value, str) and value in options:
        return value
    raise fail(name, value, "is not one of the choices", f"pass one of {', '.join(map(repr, options))}")
