"""Text-only prompts through captum's own LLM attribution: `LLMAttribution(FeatureAblation)` + `TextTokenInput`.

captum tokenises the prompt text itself, replaces one token id at a time by a baseline id, runs the model on input
ids (`model.forward(input_ids, attention_mask=..., use_cache=False)`) and sums the log-probabilities of the target
tokens, one forward per target token. It shares nothing with omni-lab's merged-embedding path, which makes it an
oracle for `occlusion(unit="text_token", baseline=<that id>)`.

Always the uncached path (`use_cached_outputs=False`): captum's default cached path re-feeds the whole sequence on
top of transformers 5's cache and gives wrong attributions (docs/references.md, "captum").
Upstream: captum/attr/_core/llm_attr.py, captum/attr/_utils/interpretable_input.py (captum 0.9).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import OmniLabInputError
from ..targets import answer_log_prob, resolve_target
from .result import Attribution, row_scores
from .scoring import check_budget, estimate
from .units import build_units


def text_attribution(lab, prompt, target=None, *, baseline=None, budget: int | None = None, progress: bool = False):
    """captum LLMAttribution(FeatureAblation) over the non-special text tokens of a text-only prompt.

    Args:
        lab: the `Lab`.
        prompt: a text-only `Prompt` (or a string).
        target: `Target` (no alternative), an answer string / ids, or None for the model's own greedy answer.
        baseline: the token id that replaces an ablated token (default: the tokenizer's unk id, else 0).
        budget: most forward passes allowed (one per ablated token and target token).
        progress: captum's progress bar.
    Returns:
        `Attribution` over `unit="text_token"` units: a token's score is f(prompt) - f(prompt with that token's id
        replaced by `baseline`), f the teacher-forced log-probability of the target.
    """
    from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput

    prompt = lab.as_prompt(prompt)
    if prompt.images or prompt.videos or prompt.audios:
        raise OmniLabInputError(
            "text_attribution runs captum's LLMAttribution on token ids, which cannot carry media; use "
            "occlusion(...) for prompts with images, video or audio"
        )
    resolved = resolve_target(lab, prompt, target)
    if resolved.alternative_ids is not None:
        raise OmniLabInputError("captum's LLMAttribution scores one answer's log-probability: give no alternative")
    tokenizer = lab.tokenizer
    if baseline is None:
        baseline = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    vocabulary = int(lab.model.get_input_embeddings().weight.shape[0])
    if not isinstance(baseline, (int, np.integer)) or isinstance(baseline, bool) or not 0 <= baseline < vocabulary:
        raise OmniLabInputError(f"baseline={baseline!r}: give a token id in [0, {vocabulary}) (captum's baseline id)")
    token_map = prompt.token_map
    units = build_units(token_map, "text_token")
    cost = estimate("text_attribution", len(units), answer_tokens=len(resolved.answer_ids))
    check_budget(cost, budget, f"captum LLMAttribution over {len(units)} text tokens", "occlusion(unit='word')")
    ids = prompt.input_ids[0].tolist()
    text = tokenizer.decode(ids, skip_special_tokens=False)
    if tokenizer.encode(text) != ids:
        raise OmniLabInputError(
            "this prompt's text does not tokenise back to its own ids with this tokenizer, so captum's "
            "TextTokenInput would attribute a different sequence; use occlusion(unit='text_token')"
        )
    special = sorted({int(i) for i in np.asarray(token_map["token_id"])[np.asarray(token_map["special"], bool)]})
    inputs = TextTokenInput(text, tokenizer, baselines=int(baseline), skip_tokens=special)
    if inputs.n_itp_features != len(units):
        raise RuntimeError(f"captum sees {inputs.n_itp_features} text tokens, the token map {len(units)}")
    attribution = LLMAttribution(FeatureAblation(lab.model), tokenizer)
    result = attribution.attribute(
        inputs, target=torch.tensor(resolved.answer_ids), use_cached_outputs=False, show_progress=progress
    )
    unit_scores = result.seq_attr.detach().double().cpu().numpy()
    answer = torch.tensor(resolved.answer_ids, device=lab.model.device)
    with torch.no_grad():  # f(prompt) the same way captum computes it: token ids in, no cache
        sequence = torch.cat([prompt.input_ids.to(answer.device), answer[None, :-1]], dim=1)
        logits = lab.model(input_ids=sequence, use_cache=False).logits
        value = float(answer_log_prob(logits, len(prompt), answer)[0])
    return Attribution(
        token_map=token_map,
        scores=row_scores(token_map, units, unit_scores),
        units=units,
        unit_scores=unit_scores,
        method="text_attribution",
        target=resolved.describe(),
        baseline=f"token {int(baseline)}",
        target_value=value,
        forward_passes=cost.forward_passes,
        details={"captum": "LLMAttribution(FeatureAblation) + TextTokenInput, use_cached_outputs=False"},
    )
