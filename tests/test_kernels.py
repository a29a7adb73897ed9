"""The CPU fast path: oneDNN pre-packed linear layers, and no matrix products on padding."""

import ast
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _official import load_official, official_tokens
from _tolerance import assert_close
from conftest import ROOT, TINY_PTH

import rnafm_sklearn._encoder_attention as attention_module
import rnafm_sklearn._encoder_layers as layers_module
import rnafm_sklearn._kernels_cpu as kernels
import rnafm_sklearn._models as models
from rnafm_sklearn import RnaFmEmbedder, RnaFmEncoder, load_model
from rnafm_sklearn._encoder_layers import _Linear
from rnafm_sklearn._kernels_cpu import bucketed

pytestmark = pytest.mark.numerics

TOL = 1e-5
needs_onednn = pytest.mark.skipif(
    kernels._onednn_linear_ops() is None, reason="this torch build has no oneDNN"
)


def _onednn_packs_bfloat16() -> bool:
    """Whether oneDNN itself (not the library's probe) reorders bfloat16 weights here: it needs
    AVX-512 BW/VL/DQ or AVX-NE-CONVERT, so not under ``ONEDNN_MAX_CPU_ISA=AVX2``."""
    ops = kernels._onednn_linear_ops()
    try:
        return ops is not None and ops[0](torch.ones(8, 8, dtype=torch.bfloat16), None) is not None
    except RuntimeError:
        return False


ONEDNN_BF16 = _onednn_packs_bfloat16()
needs_onednn_bf16 = pytest.mark.skipif(
    not ONEDNN_BF16, reason="oneDNN cannot pack bfloat16 weights on this CPU (e.g. AVX2 only)"
)


def _linears(encoder):
    return [m for m in encoder.modules() if isinstance(m, _Linear)]


def _packed_copy(encoder, dtype=torch.float32):
    state = {k: v.to(dtype) for k, v in encoder.state_dict().items()}
    copy = RnaFmEncoder.from_state_dict(encoder.config, state)
    assert copy.pack_for_cpu()
    return copy


@needs_onednn
@torch.no_grad()
def test_packed_encoder_matches_official_every_hidden_state(real_sequences):
    official, alpha = load_official(TINY_PTH)
    packed = _packed_copy(load_model(TINY_PTH))
    assert all(m._packed is not None and m.weight is None for m in _linears(packed))
    tokens = official_tokens(alpha, real_sequences)
    ref = official(tokens, repr_layers=[0, 1, 2])["representations"]
    out = packed(tokens, layers=[0, 1, 2])
    real = tokens.ne(alpha.padding_idx)
    assert max((out[k] - ref[k])[real].abs().max().item() for k in ref) <= TOL


@needs_onednn_bf16
@torch.no_grad()
def test_packed_bfloat16_agrees_with_dense_bfloat16(real_sequences):
    dense = load_model(TINY_PTH)
    dense16 = RnaFmEncoder.from_state_dict(
        dense.config, {k: v.bfloat16() for k, v in dense.state_dict().items()}
    )
    packed16 = _packed_copy(dense, torch.bfloat16)
    _, alpha = load_official(TINY_PTH)
    ids = official_tokens(alpha, real_sequences[:6])
    a = dense16(ids)[2].float()
    b = packed16(ids)[2].float()
    real = ids.ne(alpha.padding_idx)
    cos = torch.nn.functional.cosine_similarity(a[real], b[real], dim=-1)
    assert cos.min() > 0.999


@needs_onednn
def test_packing_keeps_the_state_dict_and_fingerprint():
    dense = load_model(TINY_PTH)
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    fingerprint = models.weights_fingerprint(load_model(TINY_PTH))
    assert dense.pack_for_cpu()
    after = dense.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert models.weights_fingerprint(dense) == fingerprint
    assert "onednn_packed=True" in repr(dense.layers[0].fc1)


def test_without_onednn_nothing_changes(monkeypatch, real_sequences):
    monkeypatch.setattr(kernels, "_onednn_linear_ops", lambda: None)
    enc = load_model(TINY_PTH)
    ids = torch.tensor([[0] + [4, 5, 6, 7] * 5 + [2]])
    expected = enc(ids)[2]
    assert enc.pack_for_cpu() is False
    linears = _linears(enc)
    assert all(m._packed is None and isinstance(m.weight, torch.nn.Parameter) for m in linears)
    assert torch.equal(enc(ids)[2], expected)


def test_a_wrong_operator_is_not_used(monkeypatch):
    """The probe at packing time rejects an operator that does not reproduce F.linear."""

    def reorder(w, batch):
        return w.clone()

    def wrong_linear(x, w, b, *post_op):
        return torch.nn.functional.linear(x, w, b) + 1.0

    monkeypatch.setattr(kernels, "_onednn_linear_ops", lambda: (reorder, wrong_linear))
    enc = load_model(TINY_PTH)
    assert enc.pack_for_cpu() is False
    assert all(m._packed is None for m in _linears(enc))


def _dense_ops(gelu):
    """Stand-ins for oneDNN's operators: the weight stays dense, ``gelu(y)`` is the post-op."""

    def reorder(w, batch):
        return w.clone()

    def linear(x, w, b, attr, scalars, algorithm):
        y = torch.nn.functional.linear(x, w, b)
        return gelu(y) if attr == "gelu" else y

    return reorder, linear


@pytest.mark.parametrize(
    "gelu",
    [
        lambda y: torch.nn.functional.gelu(y, approximate="tanh"),  # 4.7e-4 off at y = 3
        lambda y: y,  # post-op ignored
    ],
    ids=["tanh-approximation", "ignored"],
)
def test_a_fused_gelu_that_disagrees_is_not_used(monkeypatch, gelu):
    """The packing probe also checks the GELU post-op that fc1 uses at run time."""
    monkeypatch.setattr(kernels, "_onednn_linear_ops", lambda: _dense_ops(gelu))
    enc = load_model(TINY_PTH)
    assert enc.pack_for_cpu() is False
    assert all(m._packed is None for m in _linears(enc))
    # the same stand-in with the exact GELU passes the probe
    exact = _dense_ops(torch.nn.functional.gelu)
    monkeypatch.setattr(kernels, "_onednn_linear_ops", lambda: exact)
    assert load_model(TINY_PTH).pack_for_cpu() is True


@needs_onednn
@torch.no_grad()
def test_a_failing_packed_product_falls_back_to_the_dense_weight(
    monkeypatch, caplog, real_sequences
):
    """A RuntimeError from the oneDNN operator at run time: F.linear from then on, one warning."""
    monkeypatch.setattr(layers_module, "_FALLBACK_WARNED", False)
    dense = load_model(TINY_PTH)
    packed = _packed_copy(dense)
    _, alpha = load_official(TINY_PTH)
    ids = official_tokens(alpha, real_sequences[:6])
    expected = dense(ids, layers=[1, 2])
    reorder, _ = kernels._onednn_linear_ops()

    def failing(*args):
        raise RuntimeError("could not create a primitive descriptor for a matmul primitive")

    monkeypatch.setattr(kernels, "_onednn_linear_ops", lambda: (reorder, failing))
    with caplog.at_level(logging.WARNING, logger="rnafm_sklearn"), torch.inference_mode():
        first = packed(ids, layers=[1, 2])
        second = packed(ids, layers=[1, 2])
    for out in (first, second):  # the dense weights and F.linear: bit for bit the dense encoder
        assert all(torch.equal(out[k], expected[k]) for k in expected)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "The oneDNN linear kernel failed (RuntimeError: could not create a primitive" in (
        warnings[0].getMessage()
    )
    assert "use F.linear from now on" in warnings[0].getMessage()
    # every layer went back to an ordinary Parameter, usable outside inference mode
    for m in _linears(packed):
        assert m._packed is None and isinstance(m.weight, torch.nn.Parameter)
        assert not m.weight.is_inference()
    state = packed.state_dict()
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in state.items())


@needs_onednn
@torch.no_grad()
def test_out_of_memory_in_a_packed_product_is_not_a_kernel_failure(monkeypatch):
    """Memory errors go to the caller's back-off (which halves the batch); the layer stays packed."""
    monkeypatch.setattr(layers_module, "_FALLBACK_WARNED", False)
    packed = _packed_copy(load_model(TINY_PTH))
    reorder, _ = kernels._onednn_linear_ops()

    def oom(*args):
        raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB")

    monkeypatch.setattr(kernels, "_onednn_linear_ops", lambda: (reorder, oom))
    with pytest.raises(RuntimeError, match="not enough memory"):
        packed(torch.tensor([[0, 4, 5, 6, 7, 2]]))
    assert all(m._packed is not None for m in _linears(packed))
    assert layers_module._FALLBACK_WARNED is False


def test_the_kernels_module_imports_torch_only():
    """Kernels know nothing of the encoder: the encoder dispatches to them, not the reverse."""
    tree = ast.parse(Path(kernels.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}  # fmt: skip
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.level == 0}  # fmt: skip
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert imported <= {"__future__", "functools", "torch"} and not relative
    assert isinstance(kernels.NUMERICS_VERSION, int) and kernels.NUMERICS_VERSION >= 1


@torch.no_grad()
@pytest.mark.parametrize("pack", [False, True])
def test_padding_costs_no_matrix_products_and_stays_zero(pack, real_sequences):
    if pack and kernels._onednn_linear_ops() is None:
        pytest.skip("this torch build has no oneDNN")
    enc = load_model(TINY_PTH)
    if pack:
        enc.pack_for_cpu()
    _, alpha = load_official(TINY_PTH)
    by_length = sorted(real_sequences, key=len)
    ids = official_tokens(alpha, by_length[:6] + by_length[-2:])
    n_real = int(ids.ne(alpha.padding_idx).sum())
    assert bucketed(n_real) < 0.7 * ids.numel()  # a batch with much padding
    rows = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0])) for m in _linears(enc)
    ]
    out = enc(ids, layers=[0, 1, 2])
    for h in hooks:
        h.remove()
    # every product sees the real tokens only (rounded up to a bucket of at most 32 rows)
    assert len(rows) == 4 * 2 and set(rows) == {bucketed(n_real)}
    pads = ids.eq(alpha.padding_idx)
    for k in out:
        assert torch.count_nonzero(out[k][pads]) == 0


@torch.no_grad()
def test_float32_cpu_attention_runs_per_sequence_without_padding(monkeypatch, real_sequences):
    """No (B, T) copy of q/k/v and no mask: each sequence's real rows, read in place."""
    official, alpha = load_official(TINY_PTH)
    enc = _packed_copy(load_model(TINY_PTH))
    by_length = sorted(real_sequences, key=len)
    ids = official_tokens(alpha, by_length[:5] + by_length[-3:])  # much padding
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(q, k, v, **kwargs):
        calls.append((tuple(q.shape), q.untyped_storage().nbytes(), kwargs.get("attn_mask")))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    out = enc(ids, layers=[0, 1, 2])
    lengths = ids.ne(alpha.padding_idx).sum(1).tolist()
    qkv_bytes = bucketed(sum(lengths)) * 3 * enc.config.hidden_size * 4  # the projection itself
    heads, head_dim = enc.config.num_heads, enc.config.head_dim
    assert calls == 2 * [((1, heads, n, head_dim), qkv_bytes, None) for n in lengths]
    ref = official(ids, repr_layers=[0, 1, 2])["representations"]
    real = ids.ne(alpha.padding_idx)
    assert max((out[k] - ref[k])[real].abs().max().item() for k in ref) <= TOL
    assert all(torch.count_nonzero(out[k][~real]) == 0 for k in out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_attention_of_other_devices_agrees_with_the_cpu_kernels(dtype):
    """The masked (B, T) path (CUDA, MPS) computes what the per-sequence CPU kernels do."""
    lengths = [5, 130, 1, 40, 0]  # and a row of padding only
    pad = torch.arange(130)[None] >= torch.tensor(lengths)[:, None]
    layout = attention_module._Layout(pad)
    heads, E = 8, 64
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(layout.rows, 3 * E, generator=gen).to(dtype)
    got = attention_module._attention_padded(qkv, layout, heads)
    want = kernels.attention_sdpa_cpu(qkv, layout.segments, heads)
    assert layout.rows == 192 and got.shape == want.shape == (192, E)
    assert torch.count_nonzero(got[176:]) == 0 and torch.count_nonzero(want[176:]) == 0
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert (got.float() - want.float()).abs().max() <= tol
    fast = kernels.attention_bf16_cpu(qkv, layout.segments, heads)
    assert (fast.float() - want.float()).abs().max() <= (1e-6 if dtype == torch.float32 else 0.03)


@needs_onednn
def test_registry_packs_cpu_encoders_but_load_model_does_not(real_sequences):
    models.clear_model_cache()
    cpu32 = models.get_encoder(str(TINY_PTH), torch.device("cpu"), torch.float32)
    cpu16 = models.get_encoder(str(TINY_PTH), torch.device("cpu"), torch.bfloat16)
    assert all(m._packed is not None for m in _linears(cpu32))
    # bfloat16: packed where oneDNN can, else F.linear on the dense weights
    assert all((m._packed is not None) == ONEDNN_BF16 for m in _linears(cpu16))
    assert all(m._packed is None for m in _linears(load_model(TINY_PTH)))
    # the bfloat16 copy was made from the packed float32 encoder: its weights are intact
    dense = load_model(TINY_PTH).state_dict()
    for k, v in cpu16.state_dict().items():
        assert torch.equal(v, dense[k].bfloat16()), k
    # and the embedder (which uses the registry) still matches the unpacked encoder
    X = RnaFmEmbedder(model=str(TINY_PTH), progress=False).transform(real_sequences[:5])
    ref = load_model(TINY_PTH)
    _, alpha = load_official(TINY_PTH)
    with torch.no_grad():
        for i, s in enumerate(real_sequences[:5]):
            h = ref(official_tokens(alpha, [s]))[2][0, 1 : 1 + len(s)].mean(0).numpy()
            np.testing.assert_allclose(X[i], h, atol=TOL, rtol=0)


def test_row_buckets_bound_the_number_of_shapes_and_the_waste():
    """Few distinct matrix shapes (oneDNN caches ~0.7 MB per shape) for little extra work."""
    sizes = {n: bucketed(n) for n in range(1, 100_001)}
    assert all(n <= b <= n + max(32, n // 32) for n, b in sizes.items())
    assert len({b for n, b in sizes.items() if n <= 1024}) == 32
    for k in range(10, 17):  # at most 32 sizes per doubling above 1024
        assert len({b for n, b in sizes.items() if 2**k < n <= 2 ** (k + 1)}) <= 32
    assert bucketed(1024) == 1024 and bucketed(1000) == 1024 and bucketed(5) == 32


def _exact_attention(qkv, segments, heads):
    """Per-sequence softmax attention in float64 from the same (bfloat16) inputs."""
    rows, E = qkv.shape[0], qkv.shape[1] // 3
    D = E // heads
    out = torch.zeros(rows, E, dtype=torch.float64)
    for start, n in segments:
        q, k, v = qkv[start : start + n].double().view(n, 3, heads, D).permute(1, 2, 0, 3)
        p = torch.softmax(q @ k.transpose(1, 2) * D**-0.5, dim=-1)
        out[start : start + n] = (p @ v).transpose(0, 1).reshape(n, E)
    return out


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1 << 22, 3 * 130 * 130])
def test_bfloat16_cpu_attention_matches_exact_attention(monkeypatch, chunk):
    """Each sequence attends over its own rows only; chunking the heads changes nothing."""
    monkeypatch.setattr(kernels, "_SCORE_CHUNK", chunk)
    heads, E = 8, 64
    segments = [(0, 5), (5, 130), (135, 1), (136, 40)]
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(192, 3 * E, generator=gen).bfloat16()  # 16 bucket rows at the end
    got = kernels.attention_bf16_cpu(qkv, segments, heads)
    want = _exact_attention(qkv, segments, heads)
    assert got.dtype == torch.bfloat16 and got.shape == (192, E)
    assert torch.count_nonzero(got[176:]) == 0
    # measured: max 0.016, mean 4.5e-4 (SDPA's bfloat16 kernel: 0.004, 2.6e-4)
    err = (got.double() - want).abs()
    assert err.max() < 0.03 and err.mean() < 1e-3
    # a sequence's result does not depend on its neighbours, nor on the chunking of heads
    # exact: a sequence's products are separate matrix products of the same shapes
    alone = kernels.attention_bf16_cpu(qkv[5:135], [(0, 130)], heads)
    assert torch.equal(alone, got[5:135])
    monkeypatch.setattr(kernels, "_SCORE_CHUNK", 1 << 22)  # all heads in one chunk
    assert torch.equal(kernels.attention_bf16_cpu(qkv, segments, heads), got)


@torch.no_grad()
def test_bfloat16_cpu_encoder_uses_the_fast_attention_and_agrees_with_sdpa(
    monkeypatch, real_sequences
):
    base = load_model(TINY_PTH)
    enc16 = RnaFmEncoder.from_state_dict(
        base.config, {k: v.bfloat16() for k, v in base.state_dict().items()}
    )
    _, alpha = load_official(TINY_PTH)
    by_length = sorted(real_sequences, key=len)
    ids = official_tokens(alpha, by_length[:5] + by_length[-3:])  # much padding
    calls = []
    fast = kernels.attention_bf16_cpu
    monkeypatch.setattr(
        kernels, "attention_bf16_cpu", lambda *a: calls.append(a[1]) or fast(*a)
    )
    got = enc16(ids, layers=[1, 2])
    assert len(calls) == 2
    lengths = ids.ne(alpha.padding_idx).sum(1).tolist()
    ends = np.cumsum(lengths).tolist()
    assert calls[0] == [(e - n, n) for e, n in zip(ends, lengths, strict=True)]
    # with autograd on, the same encoder falls back to scaled_dot_product_attention
    for p in enc16.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        ref = enc16(ids, layers=[1, 2])
    assert len(calls) == 2 and ref[2].requires_grad
    real = ids.ne(alpha.padding_idx)
    for layer in (1, 2):
        a, b = got[layer][real].float(), ref[layer][real].detach().float()
        assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.9999
        assert torch.count_nonzero(got[layer][~real]) == 0


def test_autograd_runs_through_padded_batches(real_sequences):
    """load_model() encoders can be fine-tuned: no out= operation on tensors that need grad."""
    enc = load_model(TINY_PTH)
    _, alpha = load_official(TINY_PTH)
    by_length = sorted(real_sequences, key=len)
    ids = official_tokens(alpha, by_length[:3] + by_length[-1:])
    with torch.no_grad():
        expected = enc(ids)[2]
    out = enc(ids)[2]
    real = ids.ne(alpha.padding_idx)
    assert out.requires_grad
    assert_close(out.detach(), expected)  # another attention kernel with autograd on
    out[real].pow(2).mean().backward()
    heads = ("lm_head.", "contact_head.")
    encoder_params = [p for n, p in enc.named_parameters() if not n.startswith(heads)]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in encoder_params)
    assert all(p.grad is None for p in enc.lm_head.parameters())  # hidden states skip the head
    assert all(p.grad is None for p in enc.contact_head.parameters())  # and the contact head
    assert enc.layers[0].fc1.weight.grad.abs().sum() > 0


_AVX2_SCRIPT = """
import json, sys
from rnafm_sklearn import RnaFmEmbedder
seqs = json.loads(sys.argv[1])
out = {d: RnaFmEmbedder(model=sys.argv[2], dtype=d, progress=False).transform(seqs).tolist()
       for d in ("float32", "bfloat16")}
print(json.dumps(out))
"""


def test_avx2_only_kernels_give_the_same_embeddings(real_sequences):
    """A CPU without AVX-512 (simulated: oneDNN and ATen limited to AVX2, where oneDNN cannot
    pack bfloat16 weights) embeds in float32 and bfloat16 as this CPU does, within the dtype's
    rounding. CI also runs the numerics tests under these variables (.ci/run)."""
    seqs = real_sequences[:6]
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    proc = subprocess.run(
        [sys.executable, "-c", _AVX2_SCRIPT, json.dumps(seqs), str(TINY_PTH)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    avx2 = json.loads(proc.stdout)
    for dtype in ("float32", "bfloat16"):
        here = RnaFmEmbedder(model=str(TINY_PTH), dtype=dtype, progress=False).transform(seqs)
        assert_close(avx2[dtype], here, dtype, err_msg=dtype)
