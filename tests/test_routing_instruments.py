"""Routing, further: expert co-activation and routing paths recomputed from the raw top-k indices; `ol.set_top_k` as
the router's own choice with another k (the model's k is the identity, k=1 is the gate's argmax); the top-k sweep."""

import itertools

import numpy as np
import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.toy import shapesworld as sw


@pytest.fixture(scope="module")
def omni_run(twin_lab):
    prompt = sw.sample(sw.eval_seed(0, "omni", 2), family="omni").prompt(twin_lab)
    return twin_lab.run(prompt, max_new_tokens=3, reducer=None, capture=[ol.capture.routing(scores=True)])


def test_coactivation_counts_the_pairs_in_the_top_k(omni_run):
    routing = omni_run.routing
    table = routing.coactivation(by="modality")
    modality = routing.token_map.by_position("modality")[: routing.experts.shape[1]]
    for slot, layer in enumerate(routing.layers):
        for name in dict.fromkeys(modality):
            counts = {}
            for chosen in routing.experts[slot, modality == name].tolist():
                for pair in itertools.combinations(sorted(chosen), 2):
                    counts[pair] = counts.get(pair, 0) + 1
            mine = table[(table.layer == layer) & (table.modality == name)]
            assert dict(zip(zip(mine.expert, mine.other, strict=True), mine["count"], strict=True)) == counts
    assert (table.share <= 1).all() and (table.expert < table.other).all()


def test_paths_are_each_positions_top_expert_layer_by_layer(omni_run):
    routing = omni_run.routing
    paths = routing.paths(top=3, by="all")
    leading = []
    for position in range(routing.experts.shape[1]):
        steps = []
        for slot in range(len(routing.layers)):
            best = int(torch.argmax(routing.weights[slot, position]))
            steps.append(str(int(routing.experts[slot, position, best])))
        leading.append(">".join(steps))
    values, counts = np.unique(leading, return_counts=True)
    expected = sorted(zip(values, counts, strict=True), key=lambda pair: -pair[1])[:3]
    assert list(paths["count"]) == [int(count) for _, count in expected]
    assert set(paths.path) <= set(values) and paths["share"].sum() <= 1
    by_modality = routing.paths(top=2, by="modality")
    assert set(by_modality.modality) == set(routing.token_map.by_position("modality")[: routing.experts.shape[1]])


def test_set_top_k_is_the_routers_own_choice(twin_lab, omni_run):
    prompt = omni_run.prompt
    capture = [ol.capture.routing(scores=True)]
    own = twin_lab.config.text_config.num_experts_per_tok
    same = twin_lab.run(prompt, max_new_tokens=3, reducer=None, capture=capture, interventions=[ol.set_top_k(own)])
    assert same.generated_ids == omni_run.generated_ids
    assert torch.equal(same.routing.experts, omni_run.routing.experts)
    torch.testing.assert_close(same.routing.weights, omni_run.routing.weights, rtol=0, atol=0)
    one = twin_lab.run(prompt, max_new_tokens=3, reducer=None, capture=capture, interventions=[ol.set_top_k(1)])
    assert one.routing.experts.shape[-1] == 1
    text = twin_lab.config.text_config
    for slot, layer in enumerate(one.routing.layers):
        gate = twin_lab.model.language_model.model.layers[layer].mixer.gate
        scores = one.routing.scores[slot]  # (positions, experts) sigmoid scores the router saw in this run
        choice = torch.argmax(scores + gate.e_score_correction_bias.float(), dim=-1)  # the gate's top-1
        assert torch.equal(one.routing.experts[slot, :, 0], choice)
        weight = torch.ones_like(scores[:, 0]) if text.norm_topk_prob else scores.gather(1, choice[:, None])[:, 0]
        torch.testing.assert_close(one.routing.weights[slot, :, 0], weight * text.routed_scaling_factor)
    assert all(layer.mixer.gate.top_k == own for layer in twin_lab.model.language_model.model.layers
               if hasattr(layer.mixer, "gate"))  # fmt: skip
    with pytest.raises(OmniLabInputError, match="not MoE layers"):
        twin_lab.run(prompt, max_new_tokens=1, interventions=[ol.set_top_k(1, layers=[0])])
    assert all(layer.mixer.gate.top_k == own for layer in twin_lab.model.language_model.model.layers
               if hasattr(layer.mixer, "gate"))  # fmt: skip


def test_top_k_sweep(twin_lab):
    data = ol.studies.Dataset.shapesworld(2, families=["video"], seed=6)
    table = ol.studies.top_k_sweep(twin_lab, data, ks=[1], options=ol.RunOptions(max_new_tokens=4), progress=False)
    own = twin_lab.config.text_config.num_experts_per_tok
    assert sorted(table.k.unique()) == sorted({1, own}) and len(table) == 2 * len({1, own})
    reference = table[table.k == own]
    assert reference.same_answer.all() and (reference.kl_first_token.abs() < 1e-9).all()
    assert table.margin.notna().all()
