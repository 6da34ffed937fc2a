"""omni_lab.kernels: float64 spec vs chunked reference, reference vs the model itself, EVS vs transformers, dispatch.

The Triton rung is tested in tests/test_kernels_triton.py (interpreter on CPU, and marked `gpu` on CUDA).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from omni_lab import kernels
from omni_lab.kernels import dispatch, ref, spec

SPEC_TOLERANCE = {"rtol": 0.0, "atol": 1e-10}  # float64 spec vs float64 chunked reference


def _segment_ids(batch: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Segments that are non-contiguous (random), with empty ones (ids 1 and 4 never used): S = 6."""
    ids = torch.randint(0, 4, (batch, length), generator=generator)  # (B, L) in {0, 1, 2, 3}
    ids = torch.tensor([0, 2, 3, 5])[ids]  # (B, L) in {0, 2, 3, 5}: segments 1 and 4 stay empty
    return ids, 6


# --------------------------------------------------------------------------------------------------------------
# pooled_attention_mass: spec vs reference
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("length", "block"), [(1, 16), (15, 16), (16, 16), (17, 16), (47, 16), (33, 8), (29, 64)])
@pytest.mark.parametrize(("q_heads", "kv_heads"), [(4, 2), (3, 3), (4, 1)])
def test_attention_reference_matches_spec(causal, length, block, q_heads, kv_heads):
    generator = torch.Generator().manual_seed(length * 100 + block + q_heads)
    q = torch.randn(2, q_heads, length, 8, dtype=torch.float64, generator=generator) * 2  # peaked softmax
    k = torch.randn(2, kv_heads, length, 8, dtype=torch.float64, generator=generator)
    segment_ids, num_segments = _segment_ids(2, length, generator)

    expected = spec.pooled_attention_mass(q, k, segment_ids, num_segments, causal=causal)
    actual = ref.pooled_attention_mass(q, k, segment_ids, num_segments, causal=causal, query_block=block)

    assert actual.shape == (2, q_heads, length, num_segments) and actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, **SPEC_TOLERANCE)
    torch.testing.assert_close(actual.sum(-1), torch.ones(2, q_heads, length, dtype=torch.float64), **SPEC_TOLERANCE)
    assert actual[..., [1, 4]].abs().max() == 0  # empty segments get no mass


def test_attention_spec_matches_plain_softmax_with_repeat_kv():
    """The spec itself against the textbook formula: softmax(q kᵀ / √D + causal mask) with repeat_kv, pooled."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 9, 8, dtype=torch.float64, generator=generator)
    k = torch.randn(1, 2, 9, 8, dtype=torch.float64, generator=generator)
    segment_ids = torch.tensor([[0, 1, 0, 2, 2, 1, 0, 0, 2]])
    k_repeated = k[:, :, None].expand(1, 2, 2, 9, 8).reshape(1, 4, 9, 8)  # transformers' repeat_kv
    scores = q @ k_repeated.transpose(-1, -2) / 8**0.5
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    expected = scores.softmax(-1) @ F.one_hot(segment_ids, 3).double()[:, None]  # (1, 4, 9, 3)

    torch.testing.assert_close(spec.pooled_attention_mass(q, k, segment_ids), expected, **SPEC_TOLERANCE)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_query_groups_are_sums(causal):
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 37, 8, dtype=torch.float64, generator=generator)
    k = torch.randn(2, 2, 37, 8, dtype=torch.float64, generator=generator)
    segment_ids, num_segments = _segment_ids(2, 37, generator)
    query_groups = torch.randint(-1, 3, (2, 37), generator=generator)  # -1 = ignored; group 3 of 4 stays empty

    expected = spec.pooled_attention_mass(
        q, k, segment_ids, num_segments, causal=causal, query_groups=query_groups, num_query_groups=4
    )
    actual = ref.pooled_attention_mass(
        q, k, segment_ids, num_segments, causal=causal, query_block=16, query_groups=query_groups, num_query_groups=4
    )
    per_query = ref.pooled_attention_mass(q, k, segment_ids, num_segments, causal=causal, query_block=16)

    assert actual.shape == (2, 4, 4, num_segments)
    torch.testing.assert_close(actual, expected, **SPEC_TOLERANCE)
    for batch in range(2):
        for group in range(4):
            selected = per_query[batch, :, query_groups[batch] == group].sum(1)  # (H, S)
            torch.testing.assert_close(actual[batch, :, group], selected, rtol=0.0, atol=1e-12)
    group_sizes = F.one_hot(query_groups.clamp_min(0), 4).double().mul((query_groups >= 0)[..., None]).sum(1)
    torch.testing.assert_close(actual.sum(-1), group_sizes[:, None].expand(2, 4, 4), **SPEC_TOLERANCE)


def test_attention_scale_and_float32():
    generator = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 40, 16, generator=generator)
    k = torch.randn(1, 2, 40, 16, generator=generator)
    segment_ids = (torch.arange(40) // 10)[None]
    expected = spec.pooled_attention_mass(q, k, segment_ids, scale=0.7).float()
    actual = ref.pooled_attention_mass(q, k, segment_ids, scale=0.7, query_block=16)

    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=1e-6)  # float32 compute


# --------------------------------------------------------------------------------------------------------------
# ssd_pooled_mass: spec vs reference
# --------------------------------------------------------------------------------------------------------------


def _ssd_inputs(length: int, heads: int, groups: int, generator: torch.Generator, dtype=torch.float64):
    dt = torch.rand(2, length, heads, dtype=dtype, generator=generator) * 0.3 + 0.01  # (B, L, H) Δ > 0
    A = -torch.rand(heads, dtype=dtype, generator=generator) * 3 - 0.1  # (H,) negative
    B = torch.randn(2, length, groups, 4, dtype=dtype, generator=generator)  # (B, L, G, N)
    C = torch.randn(2, length, groups, 4, dtype=dtype, generator=generator)
    x = torch.randn(2, length, heads, 3, dtype=dtype, generator=generator)  # (B, L, H, P)
    return dt, A, B, C, x


@pytest.mark.parametrize(("length", "chunk"), [(1, 8), (7, 8), (8, 8), (9, 8), (33, 8), (40, 16), (23, 128)])
@pytest.mark.parametrize(("heads", "groups"), [(6, 2), (4, 1), (3, 3)])
def test_ssd_reference_matches_spec(length, chunk, heads, groups):
    generator = torch.Generator().manual_seed(length * 10 + chunk + heads)
    dt, A, B, C, _ = _ssd_inputs(length, heads, groups, generator)
    segment_ids, num_segments = _segment_ids(2, length, generator)

    expected = spec.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments)
    actual = ref.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments, chunk=chunk)

    assert actual.shape == (2, heads, length, num_segments) and actual.dtype == torch.float64
    torch.testing.assert_close(actual, expected, **SPEC_TOLERANCE)
    torch.testing.assert_close(actual.sum(-1), torch.ones(2, heads, length, dtype=torch.float64), **SPEC_TOLERANCE)
    assert actual[..., [1, 4]].abs().max() == 0


@pytest.mark.parametrize(
    "options",
    [
        dict(signed=True),
        dict(signed=True, normalize=True),
        dict(normalize=False),
        dict(value_weighted=True),
        dict(value_weighted=True, signed=True),
    ],
    ids=["signed", "signed-normalized", "raw", "value-weighted", "value-weighted-signed"],
)
def test_ssd_reference_matches_spec_options(options):
    generator = torch.Generator().manual_seed(3)
    dt, A, B, C, x = _ssd_inputs(29, 4, 2, generator)
    segment_ids, num_segments = _segment_ids(2, 29, generator)
    options = dict(options)
    if options.pop("value_weighted", False):
        options["x"] = x

    expected = spec.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments, **options)
    actual = ref.ssd_pooled_mass(dt, A, B, C, segment_ids, num_segments, chunk=8, **options)

    torch.testing.assert_close(actual, expected, **SPEC_TOLERANCE)
    if options.get("signed") and not options.get("normalize"):
        assert actual.sum(-1).sub(1).abs().max() > 1e-3  # raw signed sums are not normalised


def test_ssd_long_decay_stays_accurate_in_float32():
    """Strong decay over many chunks: float32 chunked sums stay within float32 rounding of the float64 spec."""
    generator = torch.Generator().manual_seed(4)
    dt, A, B, C, _ = _ssd_inputs(160, 2, 1, generator)
    A = A * 10  # per-step log decay down to ~ −9: cumulative sums reach −500 and beyond
    segment_ids = (torch.arange(160) % 5)[None].expand(2, 160)
    expected = spec.ssd_pooled_mass(dt, A, B, C, segment_ids).float()
    actual = ref.ssd_pooled_mass(dt.float(), A.float(), B.float(), C.float(), segment_ids, chunk=16)

    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Reference vs the model itself (random:small)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharpened_language_model(small_lab):
    """A deep copy of random:small's LLM with eager attention and larger mixer weights.

    At random initialisation the attention of layer 3 is nearly uniform and the SSD term of layer 0 is ~1e-6 of the
    D·x skip term, which would make both checks vacuous; scaling q/k projections and the Mamba input projection
    and convolution makes the attention peaked and the SSD term as large as the skip. The model code path is untouched.
    """
    model = copy.deepcopy(small_lab.model.language_model).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attention = model.model.layers[3].mixer
        attention.q_proj.weight.mul_(4)
        attention.k_proj.weight.mul_(4)
        mamba = model.model.layers[0].mixer
        mamba.in_proj.weight.mul_(4)
        mamba.conv1d.weight.mul_(20)
    return model


@pytest.fixture(scope="module")
def model_capture(sharpened_language_model):
    """One forward on random inputs_embeds (L = 50), capturing layer 3's q/k and layer 0's mixer input and scan."""
    model = sharpened_language_model
    captured = {}
    attention, mamba = model.model.layers[3].mixer, model.model.layers[0].mixer
    hooks = [
        attention.q_proj.register_forward_hook(lambda module, args, output: captured.update(q=output)),
        attention.k_proj.register_forward_hook(lambda module, args, output: captured.update(k=output)),
        mamba.in_proj.register_forward_pre_hook(lambda module, args: captured.update(mamba_in=args[0])),
        mamba.norm.register_forward_pre_hook(lambda module, args: captured.update(scan=args[0])),
    ]
    generator = torch.Generator().manual_seed(5)
    inputs_embeds = torch.randn(1, 50, model.config.hidden_size, generator=generator)
    try:
        with torch.no_grad():
            output = model(inputs_embeds=inputs_embeds, output_attentions=True, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    captured["attentions"] = output.attentions
    return captured


def test_attention_mass_equals_eager_probabilities_pooled(sharpened_language_model, model_capture):
    config = sharpened_language_model.config
    length, head_dim = 50, config.head_dim
    q = model_capture["q"].view(1, length, config.num_attention_heads, head_dim).transpose(1, 2)  # (1, 8, L, 32)
    k = model_capture["k"].view(1, length, config.num_key_value_heads, head_dim).transpose(1, 2)  # (1, 2, L, 32)
    segment_ids = torch.tensor([[0] * 10 + [2] * 15 + [0] * 5 + [3] * 20])  # non-contiguous 0, empty 1 and 4
    probabilities = model_capture["attentions"][0]  # (1, 8, L, L): layer 3, the first attention layer

    expected = probabilities @ F.one_hot(segment_ids, 5).float()[:, None]  # (1, 8, L, 5)
    actual = kernels.pooled_attention_mass(q, k, segment_ids, num_segments=5, query_block=16)

    assert probabilities.shape == (1, 8, length, length)
    assert expected.std() > 0.1  # the check is not vacuous: attention is far from uniform
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=1e-5)


def _mamba_parameters(mixer, hidden_states):
    """dt, A, B, C, x of a NemotronHMamba2Mixer, exactly as its torch forward computes them (no cache, no mask).

    Mirrors transformers/models/nemotron_h/modeling_nemotron_h.py (NemotronHMamba2Mixer.forward, causal_conv1d_fn,
    mamba2_chunk_scan): in_proj; split gate | xBC | dt; causal depthwise conv + SiLU; split x | B | C;
    Δ = clamp(softplus(dt + dt_bias), time_step_limit); A = −exp(A_log).
    """
    batch, length, _ = hidden_states.shape
    heads, head_dim, groups, state = mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.ssm_state_size
    projected = mixer.in_proj(hidden_states)
    _, xBC, dt = projected.split([mixer.intermediate_size, mixer.conv_dim, heads], dim=-1)
    xBC = F.conv1d(
        xBC.transpose(1, 2),
        mixer.conv1d.weight,
        mixer.conv1d.bias,
        padding=mixer.conv_kernel_size - 1,
        groups=mixer.conv_dim,
    )[..., :length]
    xBC = F.silu(xBC).transpose(1, 2)  # (B, L, conv_dim)
    x, B, C = xBC.split([mixer.intermediate_size, groups * state, groups * state], dim=-1)
    dt = F.softplus(dt + mixer.dt_bias).clamp(*mixer.time_step_limit)  # (B, L, H)
    A = -torch.exp(mixer.A_log.float())  # (H,)
    return (
        dt,
        A,
        B.reshape(batch, length, groups, state),
        C.reshape(batch, length, groups, state),
        x.reshape(batch, length, heads, head_dim),
    )


def _recurrence(dt, A, B, C, x):
    """Token-by-token Mamba-2 recurrence in float64: h_t = exp(Δ_t A) h_{t−1} + Δ_t x_t B_tᵀ, y_t = h_t C_t.

    Args: dt (B, L, H), A (H,), B and C (B, L, G, N), x (B, L, H, P). Returns y (B, L, H, P) without the D skip.
    """
    batch, length, heads = dt.shape
    heads_per_group = heads // B.shape[2]
    B = B.double().repeat_interleave(heads_per_group, dim=2)  # (B, L, H, N)
    C = C.double().repeat_interleave(heads_per_group, dim=2)
    dt, A, x = dt.double(), A.double(), x.double()
    state = torch.zeros(batch, heads, x.shape[-1], B.shape[-1], dtype=torch.float64)  # (B, H, P, N)
    outputs = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (B, H, 1, 1)
        state = decay * state + dt[:, t, :, None, None] * x[:, t, :, :, None] * B[:, t, :, None, :]
        outputs.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    return torch.stack(outputs, dim=1)  # (B, L, H, P)


def test_ssd_alpha_is_the_model_recurrence_and_reconstructs_its_scan(sharpened_language_model, model_capture):
    mixer = sharpened_language_model.model.layers[0].mixer
    with torch.no_grad():
        dt, A, B, C, x = _mamba_parameters(mixer, model_capture["mamba_in"])
    length, heads = dt.shape[1], dt.shape[2]
    one_position_per_segment = torch.arange(length)[None]  # pooled mass with S = L is α itself

    # α from the kernel (float64) == α read off the recurrence, driven by one-hot inputs x_s = e_s.
    alpha64 = ref.ssd_pooled_mass(
        dt.double(), A.double(), B.double(), C.double(), one_position_per_segment, length, signed=True, chunk=16
    )  # (1, H, L, L)
    one_hot_inputs = torch.eye(length, dtype=torch.float64)[None, :, None, :].expand(1, length, heads, length)
    alpha_from_recurrence = _recurrence(dt, A, B, C, one_hot_inputs).permute(0, 2, 1, 3)  # (1, H, L, L)
    torch.testing.assert_close(alpha64, alpha_from_recurrence, rtol=0.0, atol=1e-10)

    # The recurrence on the real x is the model's own scan (before the gated norm), within float32.
    scan = model_capture["scan"].view(1, length, heads, -1)  # (1, L, H, P)
    skip = mixer.D.detach()[:, None] * x  # (1, L, H, P)
    torch.testing.assert_close(_recurrence(dt, A, B, C, x).float() + skip, scan, rtol=1e-4, atol=1e-5)

    # y_t = Σ_s α[t, s] x_s + D x_t from the float32 kernel reproduces the model's scan output.
    alpha = kernels.ssd_pooled_mass(dt, A, B, C, one_position_per_segment, length, signed=True, chunk=16)
    reconstructed = torch.einsum("bhts,bshp->bthp", alpha, x) + skip
    ssd_term = (scan - skip).abs().max()
    assert ssd_term > 0.5 * skip.abs().max()  # the check is not vacuous: the SSD term is as large as the skip
    torch.testing.assert_close(reconstructed, scan, rtol=1e-4, atol=1e-5)

    # And the pooled, normalised mass is |α| pooled and normalised per row.
    segment_ids = torch.tensor([[0] * 12 + [1] * 20 + [0] * 8 + [3] * 10])
    expected = alpha64.abs() @ F.one_hot(segment_ids, 4).double()[:, None]
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(
        kernels.ssd_pooled_mass(dt, A, B, C, segment_ids, 4, chunk=16), expected.float(), rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------------------------------------------
# EVS vs transformers' compute_retention_mask
# --------------------------------------------------------------------------------------------------------------


def _video_embeds(kind: str, num_tubelets: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "random":
        return torch.randn(num_tubelets * tokens, 16, generator=generator)
    if kind == "bfloat16":
        return torch.randn(num_tubelets * tokens, 16, generator=generator).bfloat16()
    if kind == "duplicated":  # tubelets repeated in pairs: many dissimilarities exactly equal
        base = torch.randn((num_tubelets + 1) // 2, tokens, 16, generator=generator)
        return base.repeat_interleave(2, dim=0)[:num_tubelets].reshape(-1, 16)
    # quantised: few distinct vectors, so ties everywhere
    palette = torch.randn(3, 16, generator=generator)
    return palette[torch.randint(0, 3, (num_tubelets * tokens,), generator=generator)]


@pytest.mark.parametrize("kind", ["random", "bfloat16", "duplicated", "quantised"])
def test_evs_retention_mask_is_identical_to_transformers(kind):
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

    generator = torch.Generator().manual_seed(6)
    rates = [i / 100 for i in range(100)]
    checked = ties = 0
    for num_tubelets in range(1, 33):
        tokens = int(torch.randint(1, 9, (1,), generator=generator))
        embeds = _video_embeds(kind, num_tubelets, tokens, generator)
        scores = kernels.evs_scores(embeds, num_tubelets)
        assert scores.shape == (num_tubelets * tokens,)
        assert (scores[:tokens] == 255).all()
        ties += scores[tokens:].numel() - scores[tokens:].unique().numel()
        for rate in rates:
            expected = compute_retention_mask(embeds, num_tubelets, rate)
            actual = kernels.evs_retention_mask(embeds, num_tubelets, rate)
            assert actual.dtype == torch.bool and torch.equal(actual, expected), (kind, num_tubelets, tokens, rate)
            assert torch.equal(kernels.evs_keep(scores, num_tubelets, rate), expected)  # the EVS reducer's path
            checked += 1
    assert checked == 32 * 100
    if kind in ("duplicated", "quantised"):
        assert ties > 100  # the stable order of tied scores is exercised


def test_evs_scores_match_spec():
    generator = torch.Generator().manual_seed(7)
    embeds = torch.randn(5 * 6, 32, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(kernels.evs_scores(embeds, 5), spec.evs_scores(embeds, 5), rtol=0.0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# Dispatch and argument checks
# --------------------------------------------------------------------------------------------------------------


def test_import_does_not_import_triton():
    code = "import sys, omni_lab.kernels; assert 'triton' not in sys.modules, 'triton was imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _small_attention_inputs():
    generator = torch.Generator().manual_seed(8)
    q = torch.randn(1, 2, 10, 8, generator=generator)
    k = torch.randn(1, 2, 10, 8, generator=generator)
    return q, k, (torch.arange(10) % 3)[None]


def test_dispatch_modes_on_cpu(monkeypatch):
    q, k, segment_ids = _small_attention_inputs()
    expected = ref.pooled_attention_mass(q, k, segment_ids)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(dispatch, "_warned", set())

    for mode in ["auto", "ref", " REF "]:
        monkeypatch.setenv("OMNI_LAB_KERNELS", mode)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # auto and ref on CPU: torch, silently (ref exactly the reference)
            assert kernels.choose_backend("pooled_attention_mass", q, k) == "ref"
            tolerance = 0 if mode.strip().lower() == "ref" else 1e-6  # auto: torch's fused attention path
            torch.testing.assert_close(
                kernels.pooled_attention_mass(q, k, segment_ids), expected, rtol=0, atol=tolerance
            )

    monkeypatch.setenv("OMNI_LAB_KERNELS", "triton")  # requested but impossible on CPU: warn once, fall back
    with pytest.warns(UserWarning, match="using the torch reference because"):
        torch.testing.assert_close(kernels.pooled_attention_mass(q, k, segment_ids), expected, rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.pooled_attention_mass(q, k, segment_ids)  # second call: no second warning

    monkeypatch.setenv("OMNI_LAB_KERNELS", "fast")
    with pytest.raises(ValueError, match="OMNI_LAB_KERNELS"):
        kernels.pooled_attention_mass(q, k, segment_ids)


def test_dispatch_falls_back_when_triton_does_not_import(monkeypatch):
    monkeypatch.setenv("OMNI_LAB_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(dispatch, "triton_import_error", lambda: "ImportError: no module named triton")
    monkeypatch.setattr(dispatch, "_warned", set())
    q, k, _ = _small_attention_inputs()
    with pytest.warns(UserWarning, match="triton does not import"):
        assert kernels.choose_backend("pooled_attention_mass", q, k) == "ref"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda q, k, s: kernels.pooled_attention_mass(q, k[:, :, :5], s), "queries"),
        (lambda q, k, s: kernels.pooled_attention_mass(q, k, s, query_start=2), "query_start"),
        (lambda q, k, s: kernels.pooled_attention_mass(q[:, :1], k, s), "multiple"),
        (lambda q, k, s: kernels.pooled_attention_mass(q, k, s.float()), "integer"),
        (lambda q, k, s: kernels.pooled_attention_mass(q, k, s, num_segments=2), r"\[0, 2\)"),
        (lambda q, k, s: kernels.pooled_attention_mass(q, k, s - 1), r"\[0, "),
        (lambda q, k, s: kernels.pooled_attention_mass(q, k, s, query_groups=s - 2), "query_groups"),
        (lambda q, k, s: kernels.ssd_pooled_mass(q[0], q[0, 0], q, q, s), "expected"),
        (lambda q, k, s: kernels.evs_scores(q[0, 0], 3), "num_tubelets"),
        (lambda q, k, s: kernels.evs_retention_mask(q[0, 0], 2, 1.5), "rate"),
    ],
)
def test_argument_errors(call, message):
    q, k, segment_ids = _small_attention_inputs()
    with pytest.raises(ValueError, match=message):
        call(q, k, segment_ids)


@pytest.mark.parametrize("query_start", [1, 7, 16, 23])
def test_attention_query_start_gives_the_last_rows(query_start):
    """Rows computed from a query offset equal the tail of the full computation (reference and spec)."""
    torch.manual_seed(5)
    length, segments = 24, 4
    q = torch.randn(1, 4, length, 8, dtype=torch.float64)
    k = torch.randn(1, 2, length, 8, dtype=torch.float64)
    segment_ids = torch.randint(0, segments, (1, length))
    full = ref.pooled_attention_mass(q, k, segment_ids, segments, query_block=5)
    tail = kernels.pooled_attention_mass(
        q[:, :, query_start:], k, segment_ids, segments, query_block=5, query_start=query_start
    )
    torch.testing.assert_close(tail, full[:, :, query_start:], rtol=0, atol=1e-12)
    torch.testing.assert_close(
        spec.pooled_attention_mass(q[:, :, query_start:], k, segment_ids, segments, query_start=query_start),
        tail,
        rtol=0,
        atol=1e-10,
    )


@pytest.mark.parametrize(("query_start", "chunk"), [(1, 4), (9, 4), (12, 4), (5, 16), (19, 7)])
def test_ssd_query_start_and_query_groups(query_start, chunk):
    torch.manual_seed(6)
    length, heads, groups, state, segments = 20, 4, 2, 3, 3
    dt = torch.rand(1, length, heads, dtype=torch.float64) * 0.5
    A = -torch.rand(heads, dtype=torch.float64) - 0.1
    B = torch.randn(1, length, groups, state, dtype=torch.float64)
    C = torch.randn(1, length, groups, state, dtype=torch.float64)
    segment_ids = torch.randint(0, segments, (1, length))
    full = spec.ssd_pooled_mass(dt, A, B, C, segment_ids, segments)
    tail = kernels.ssd_pooled_mass(
        dt, A, B, C[:, query_start:], segment_ids, segments, chunk=chunk, query_start=query_start
    )
    torch.testing.assert_close(tail, full[:, :, query_start:], rtol=0, atol=1e-10)
    query_groups = torch.randint(-1, 2, (1, length - query_start))
    grouped = kernels.ssd_pooled_mass(
        dt,
        A,
        B,
        C[:, query_start:],
        segment_ids,
        segments,
        chunk=chunk,
        query_groups=query_groups,
        num_query_groups=2,
        query_start=query_start,
    )
    expected = torch.stack([full[0, :, query_start:][:, (query_groups[0] == g)].sum(1) for g in range(2)], dim=1)
    torch.testing.assert_close(grouped[0], expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("causal", "segments", "query_start", "grouped"),
    [
        (True, 5, 0, False),
        (False, 5, 0, False),
        (True, 37, 0, False),
        (True, 6, 11, False),
        (True, 6, 0, True),
        (True, 6, 9, True),
    ],
)
def test_fused_attention_path_matches_the_reference(causal, segments, query_start, grouped):
    """The torch fast path (fused SDPA with one-hot values) equals the readable reference in float32."""
    from omni_lab.kernels import sdpa

    torch.manual_seed(7)
    length, head_dim = 50, 16
    q = torch.randn(2, 4, length - query_start, head_dim)
    k = torch.randn(2, 2, length, head_dim)
    segment_ids = torch.randint(0, segments, (2, length))
    groups = torch.randint(-1, 3, (2, length - query_start)) if grouped else None
    arguments = (q, k, segment_ids, segments, causal, None, 8, groups, 3 if grouped else None, query_start)
    fused = sdpa.pooled_attention_mass(*arguments)
    expected = ref.pooled_attention_mass(*arguments)
    torch.testing.assert_close(fused, expected, rtol=0, atol=2e-6)
