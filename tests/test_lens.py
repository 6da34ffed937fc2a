"""The logit lens and direct logit attribution (omni_lab/capture/lens.py, ol.studies.direct_logit_attribution):
the writes sum to the final residual and, with the final norm's scale frozen, to the target's logit; the attention
split equals one recomputed from transformers' own (eager) attention probabilities; the Mamba split equals the
token-by-token recurrence run one source at a time; the lens's last layer is the model's own answer."""

import pytest
import torch

import omni_lab as ol
from omni_lab import OmniLabInputError
from omni_lab.capture.lens import mamba_source_writes
from omni_lab.capture.mass_capture import MambaInputs
from omni_lab.presets import layers
from omni_lab.toy import shapesworld as sw


@pytest.fixture(scope="module")
def omni(twin_lab):
    example = sw.sample(sw.eval_seed(0, "omni", 3), "omni")
    return example, example.prompt(twin_lab)


def test_the_writes_sum_to_the_final_residual_and_to_the_logit(twin_lab, omni):
    example, prompt = omni
    result = ol.studies.direct_logit_attribution(twin_lab, prompt, example.answer, reducer=None, groups="item")
    assert result.residual_error <= 1e-5  # embedding + every mixer's write = the stream the final norm sees
    assert result.logit_error <= 1e-4  # with the norm's scale frozen: the direct logits sum to the target's logit
    logits = twin_lab.logits(prompt, reducer=None)[0, -1]
    assert result.target_logit == pytest.approx(float(logits[result.target_token]), abs=1e-4)
    assert result.groups.logit.sum() == pytest.approx(result.components.logit.sum(), abs=1e-4)
    writers = set(result.by_kind().writer)
    assert {"embedding", "mamba", "attention", "routed experts", "shared expert"} <= writers
    chosen = twin_lab.config.text_config.num_experts_per_tok
    moe = [info.index for info in layers(twin_lab.model) if info.kind == "moe"]
    experts = result.components[result.components.component.str.startswith("expert ")]
    assert (experts.groupby("layer").size() == chosen).all() and sorted(experts.layer.unique()) == moe
    assert set(result.groups.group) <= set(prompt.token_map.partition("item").labels)
    assert result.lens.layer.tolist() == [-1, *[info.index for info in layers(twin_lab.model)]]


def test_the_attention_split_equals_transformers_own_probabilities(small_lab):
    prompt = small_lab.prompt("a small cat sat on the mat and looked up")
    token = 5
    row = small_lab.prefill([prompt], capture=[ol.capture.direct_logit(token)], reducer=None)[0]
    detail = row.captures["direct_logit"]
    attention = next(info.index for info in layers(small_lab.model) if info.kind == "attention")
    model = small_lab.model.language_model.model
    mixer = model.layers[attention].mixer
    kept = {}
    handle = mixer.v_proj.register_forward_hook(lambda m, i, output: kept.setdefault("v", output))
    previous = small_lab.model.config.text_config._attn_implementation
    small_lab.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            output = model(inputs_embeds=small_lab.prepare(prompt, reducer=None).embeds, output_attentions=True)
    finally:
        handle.remove()
        small_lab.model.set_attn_implementation(previous)
    slot = [info.index for info in layers(small_lab.model) if info.kind == "attention"].index(attention)
    probabilities = output.attentions[slot][0, :, -1]  # (H, S): transformers' own, at the last position
    text = small_lab.config.text_config
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    values = kept["v"][0].reshape(len(prompt), kv_heads, mixer.head_dim).repeat_interleave(heads // kv_heads, 1)
    per_source = torch.einsum("hs,she->she", probabilities, values).reshape(len(prompt), -1)  # (S, H * d)
    writes = torch.nn.functional.linear(per_source, mixer.o_proj.weight)  # (S, D)
    norm = small_lab.model.language_model.model.norm_f
    direction = small_lab.model.language_model.lm_head.weight[token] * norm.weight
    expected = (writes @ direction) / detail.rms
    mine = detail.sources[(detail.sources.layer == attention)].sort_values("source").logit.to_numpy()
    torch.testing.assert_close(torch.from_numpy(mine.copy()).float(), expected.float(), rtol=1e-4, atol=1e-5)


def test_the_mamba_split_equals_the_recurrence_one_source_at_a_time(toy_lab):
    prompt = toy_lab.prompt("the quick brown fox")
    mamba = next(info.index for info in layers(toy_lab.model) if info.kind == "mamba")
    mixer = toy_lab.model.language_model.model.layers[mamba].mixer
    points = [f"llm.layers.{mamba}.mamba.{part}" for part in ("in_proj", "ssm", "out")]
    run = toy_lab.run(prompt, max_new_tokens=1, reducer=None, cache=points)
    projected = run.cache[f"llm.layers.{mamba}.mamba.in_proj"][:, : len(prompt)].clone()
    scan = run.cache[f"llm.layers.{mamba}.mamba.ssm"][0, : len(prompt)].float().clone()
    with torch.no_grad():
        conv, dt, B, C = MambaInputs(mixer)(projected)
    x = conv[0, :, : mixer.intermediate_size].float()
    gate = projected[0, -1, : mixer.intermediate_size].float()
    at = len(prompt) - 1
    with torch.no_grad():
        splits = mamba_source_writes(mixer, x, dt[0], B[0], C[0], scan, gate, at)  # (S, D)

    heads, head_dim, groups = mixer.num_heads, mixer.head_dim, mixer.n_groups
    A = -torch.exp(mixer.A_log.float())

    def recurrence(inputs):
        """y at `at`, token by token: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t."""
        state = torch.zeros(heads, head_dim, mixer.ssm_state_size)
        for t in range(at + 1):
            values = inputs[t].reshape(heads, head_dim)
            b = B[0, t].float().repeat_interleave(heads // groups, 0)  # (H, N)
            c = C[0, t].float().repeat_interleave(heads // groups, 0)
            state = (
                torch.exp(dt[0, t] * A)[:, None, None] * state
                + dt[0, t][:, None, None] * values[..., None] * b[:, None]
            )
            y = torch.einsum("hdn,hn->hd", state, c) + mixer.D.float()[:, None] * values
        return y.reshape(-1)

    torch.testing.assert_close(recurrence(x), scan[at], rtol=1e-4, atol=1e-5)  # the recurrence is the layer's own y
    silu = torch.nn.functional.silu(gate)
    group = mixer.norm.group_size
    rms = torch.sqrt((scan[at] * silu).reshape(-1, group).pow(2).mean(-1) + mixer.norm.variance_epsilon)
    scale = (silu.reshape(-1, group) / rms[:, None]).reshape(-1) * mixer.norm.weight.float()
    for source in range(at + 1):
        alone = torch.zeros_like(x)
        alone[source] = x[source]
        with torch.no_grad():
            expected = torch.nn.functional.linear(recurrence(alone) * scale, mixer.out_proj.weight.float())
        torch.testing.assert_close(splits[source], expected, rtol=1e-4, atol=1e-5)
    output = run.cache[f"llm.layers.{mamba}.mamba.out"][0, at].float()
    torch.testing.assert_close(splits.sum(0), output, rtol=1e-4, atol=1e-5)  # the splits add up to the layer's write


def test_the_logit_lens_ends_at_the_models_answer(twin_lab, omni):
    _, prompt = omni
    run = twin_lab.run(prompt, max_new_tokens=3, reducer=None, capture=["logit_lens"], return_logits=True)
    for position in range(len(run.generated_ids)):
        table = run.logit_lens(position=position)
        last = table.iloc[-1]
        expected = torch.log_softmax(run.logits[position], -1)[run.generated_ids[position]]
        assert last.logprob == pytest.approx(float(expected), abs=1e-4) and last["rank"] == 0
        assert int(last.top_token) == run.generated_ids[position]
    assert run.logit_lens("no such answer for sure").shape[0] == len(layers(twin_lab.model)) + 1
    with pytest.raises(OmniLabInputError, match='capture=\\["logit_lens"\\]'):
        twin_lab.run(prompt, max_new_tokens=1, reducer=None).logit_lens()
