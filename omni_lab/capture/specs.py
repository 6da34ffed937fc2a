"""What a run can capture, as small option objects (`capture=["routing", ol.capture.attention_mass(...)]`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OmniLabInputError
from .segments import SEGMENTATIONS


@dataclass(frozen=True)
class RoutingSpec:
    """Expert routing of every MoE layer; `scores=True` also keeps all sigmoid scores `(positions, experts)`."""

    scores: bool = False
    name: str = "routing"


@dataclass(frozen=True)
class MassSpec:
    """Attention ("attention") or Mamba ("mamba") mass pooled over segments of the key positions.

    Attributes:
        segments: "item", "modality", "frame", "audio_window" or "region" (see capture.segments).
        queries: None/"all" (each position), "answer", "text", "modality", a mask over prompt positions, or
            {name: mask}; grouped rows are means over the group's queries.
        layers: restrict to these LLM layers (default: every layer of the kind).
        window_seconds, regions: parameters of the "audio_window" and "region" segmentations.
        signed: Mamba only: pool the signed α instead of |α|.
    """

    kind: str
    segments: str = "item"
    queries: object = None
    layers: tuple[int, ...] | None = None
    window_seconds: float = 1.0
    regions: int = 2
    signed: bool = False

    @property
    def name(self) -> str:
        return f"{self.kind}_mass"


@dataclass(frozen=True)
class ResidualSpec:
    """Norm of the residual stream entering each layer, of each mixer's contribution, and their cosine."""

    name: str = "residual"


def routing(scores: bool = False) -> RoutingSpec:
    return RoutingSpec(scores=scores)


def attention_mass(
    segments: str = "item", queries=None, layers=None, window_seconds: float = 1.0, regions: int = 2
) -> MassSpec:
    return _mass("attention", segments, queries, layers, window_seconds, regions, False)


def mamba_mass(
    segments: str = "item",
    queries=None,
    layers=None,
    window_seconds: float = 1.0,
    regions: int = 2,
    signed: bool = False,
) -> MassSpec:
    return _mass("mamba", segments, queries, layers, window_seconds, regions, signed)


def residual() -> ResidualSpec:
    return ResidualSpec()


def _mass(kind, segments, queries, layers, window_seconds, regions, signed) -> MassSpec:
    if segments not in SEGMENTATIONS:
        raise OmniLabInputError(f"segments={segments!r}: choose one of {SEGMENTATIONS}")
    return MassSpec(
        kind, segments, queries, tuple(layers) if layers is not None else None, window_seconds, regions, signed
    )


_BY_NAME = {"routing": routing, "attention_mass": attention_mass, "mamba_mass": mamba_mass, "residual": residual}


def normalise(capture) -> dict[str, object]:
    """{name: spec} from a list of names and spec objects."""
    if capture is None:
        return {}
    if isinstance(capture, (str, RoutingSpec, MassSpec, ResidualSpec)):
        capture = [capture]
    if not isinstance(capture, (list, tuple, set)):
        raise OmniLabInputError(
            f"capture={capture!r}: pass a name, a spec such as ol.capture.routing(), or a list of them"
        )
    specs = {}
    for entry in capture:
        if isinstance(entry, str):
            if entry not in _BY_NAME:
                raise OmniLabInputError(f"capture {entry!r} is not one of {sorted(_BY_NAME)}")
            entry = _BY_NAME[entry]()
        if not isinstance(entry, (RoutingSpec, MassSpec, ResidualSpec)):
            raise OmniLabInputError(f"capture entry {entry!r}: use a name or ol.capture.routing()/attention_mass()/...")
        specs[entry.name] = entry
    return specs
