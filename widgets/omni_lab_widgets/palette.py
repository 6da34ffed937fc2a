"""The one palette of omni-lab's pictures: every widget and the playground's figures colour from here.

    STATUS_COLOURS     a token's status (`TokenMap.status`): kept green, merged blue, pruned red
    MODALITY_COLOURS   a modality (`omni_lab.modalities.MODALITIES`), plus "mixed" for a bin or group spanning several
    KIND_COLOURS       a mixer kind whose mass a view draws: attention, Mamba
    WRITER_COLOURS     a writer into the residual stream: embedding, Mamba, attention, routed / shared experts, MLP
    ATTENTION_SHADE    the band behind attention layers among Mamba layers

`modality_colour(name)` and `translucent(colour, alpha)` read them; nothing here imports plotly.
"""

from __future__ import annotations

STATUS_COLOURS = {"kept": "#2ca02c", "merged": "#1f77b4", "pruned": "#d62728"}
MODALITY_COLOURS = {
    "text": "#7f7f7f",
    "image": "#ff7f0e",
    "video": "#9467bd",
    "audio": "#17becf",
    "generated": "#2f2f2f",
    "mixed": "#bcbd22",
}
OTHER_COLOUR = "#8c564b"  # a group that is none of the modalities (a user group's name)
KIND_COLOURS = {"attention": "#e6550d", "mamba": "#8c6d31"}
WRITER_COLOURS = {  # who writes into the residual stream (the logit lens view)
    "embedding": "#7f7f7f",
    "mamba": "#8c6d31",
    "attention": "#e6550d",
    "routed experts": "#3182bd",
    "shared expert": "#9ecae1",
    "mlp": "#31a354",
}
ATTENTION_SHADE = "#fff3bf"
DROPPED_SHADE = "rgba(15,15,15,0.62)"  # over the pixels of a pruned token's cell


def modality_colour(name: str) -> str:
    """The colour every view uses for a modality (`OTHER_COLOUR` for any other group)."""
    return MODALITY_COLOURS.get(name, OTHER_COLOUR)


def translucent(colour: str, alpha: float) -> str:
    """A `#rrggbb` colour as `rgba(r,g,b,alpha)`, e.g. merged tokens' cells shaded over their pixels."""
    red, green, blue = (int(colour[index : index + 2], 16) for index in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha:g})"
