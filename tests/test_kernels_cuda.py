"""Variable-length attention (``_kernels_cuda``): each sequence over its own tokens, no mask.

The tests take the ``device`` fixture: on the CPU (CI) they check the jagged layout through
PyTorch's reference implementation for nested tensors; ``RNAFM_TEST_DEVICE=cuda`` runs the
same tests on the fused CUDA kernels (flash attention, memory-efficient attention).
"""

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _official import load_official, official_tokens
from conftest import TINY_PTH

import rnafm_sklearn._encoder_layers as layers_module
import rnafm_sklearn._kernels_cuda as kernels
from rnafm_sklearn import load_model
from rnafm_sklearn._encoder_attention import _attention_padded, _Layout

pytestmark = pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")

TOL = 1e-5
# Lengths of real tokens: a single token, a row of padding only, long and short; 500 tokens
# in a layout of 512 rows (12 rows of bucket padding).
LENGTHS = [37, 1, 300, 12, 0, 150]


def _pad(lengths=LENGTHS):
    return torch.arange(max(lengths))[None] >= torch.tensor(lengths)[:, None]


def _batch(device, heads=20, E=640, dtype=torch.float32, seed=0):
    """A layout of ``LENGTHS`` on ``device`` and a random fused projection for it."""
    layout = _Layout(_pad().to(device))
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(layout.rows, 3 * E, generator=gen)
    # bucket rows hold the projection's bias in the encoder: here random, to be ignored
    return layout, qkv.to(device=device, dtype=dtype)


def _reference(qkv, heads):
    """The padded, masked path in float64 on the CPU."""
    return _attention_padded(qkv.double().cpu(), _Layout(_pad()), heads)


@pytest.mark.parametrize("heads", [20, 10])  # head size 32 (RNA-FM) and 64
def test_float32_agrees_with_the_padded_path_within_1e5(device, heads):
    layout, qkv = _batch(device, heads)
    assert (layout.n, layout.rows) == (500, 512)
    got = kernels.attention_varlen(qkv, layout.segments, layout.n, heads)
    padded = _attention_padded(qkv, layout, heads)
    assert got.shape == padded.shape == (512, 640) and got.dtype == torch.float32
    assert torch.count_nonzero(got[layout.n :]) == 0
    # measured on the CPU: <= 1.4e-6 from the padded path, <= 9e-7 from float64
    assert (got - padded).abs().max().item() <= TOL
    assert (got.double().cpu() - _reference(qkv, heads)).abs().max().item() <= TOL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_agrees_by_cosine(device, dtype):
    layout, qkv = _batch(device, dtype=dtype)
    got = kernels.attention_varlen(qkv, layout.segments, layout.n, 20)
    assert got.dtype == dtype and torch.count_nonzero(got[layout.n :]) == 0
    want = _reference(qkv, 20)[: layout.n]
    cosine = F.cosine_similarity(got[: layout.n].double().cpu(), want, dim=1)
    # measured on the CPU (bfloat16, scores rounded before the softmax): min 0.9997 per token
    assert cosine.min().item() >= 0.999


def test_gradients_agree_with_the_padded_path(device):
    layout, qkv = _batch(device)
    weight = torch.randn(layout.rows, 640, generator=torch.Generator().manual_seed(1)).to(device)
    grads = []
    for attend in (
        lambda x: kernels.attention_varlen(x, layout.segments, layout.n, 20),
        lambda x: _attention_padded(x, layout, 20),
    ):
        x = qkv.clone().requires_grad_()
        (attend(x) * weight).sum().backward()
        grads.append(x.grad)
    got, want = grads
    assert torch.count_nonzero(got[layout.n :]) == 0
    assert got.abs().max().item() > 1  # not a vacuous comparison
    assert (got - want).abs().max().item() <= TOL  # measured on the CPU: <= 2e-6


@torch.no_grad()
def test_the_encoder_with_varlen_attention_matches_official(monkeypatch, device, real_sequences):
    """What the dispatcher will run on CUDA, end to end: every hidden state within 1e-5."""

    def varlen(qkv, layout, num_heads):
        return kernels.attention_varlen(qkv, layout.segments, layout.n, num_heads)

    monkeypatch.setattr(layers_module, "attention", varlen)
    official, alpha = load_official(TINY_PTH)
    by_length = sorted(real_sequences, key=len)
    tokens = official_tokens(alpha, by_length[:4] + by_length[-2:])  # much padding
    out = load_model(TINY_PTH).to(device)(tokens.to(device), layers=[0, 1, 2])
    ref = official(tokens, repr_layers=[0, 1, 2])["representations"]
    real = tokens.ne(alpha.padding_idx)
    assert max((out[k].cpu() - ref[k])[real].abs().max().item() for k in ref) <= TOL
    assert all(torch.count_nonzero(out[k].cpu()[~real]) == 0 for k in out)


def test_the_kernel_gets_one_jagged_batch_and_on_cuda_reads_qkv_in_place(monkeypatch, device):
    """One SDPA call on ragged (B, H, j, D) tensors, no mask; views of ``qkv`` on CUDA."""
    layout, qkv = _batch(device)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    calls = []

    def spy(q, k, v, *args, **kwargs):
        calls.append((q, args, kwargs))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    kernels.attention_varlen(qkv, layout.segments, layout.n, 20)
    [(q, args, kwargs)] = calls
    assert q.is_nested and q.layout == torch.jagged and not args and not kwargs
    assert q.offsets().tolist() == [0, 37, 38, 338, 350, 500]  # the empty sequence dropped
    values = q.transpose(1, 2).values()  # (n, H, D)
    assert values.shape == (500, 20, 32)
    in_place = values.untyped_storage().data_ptr() == qkv.untyped_storage().data_ptr()
    assert in_place == (qkv.device.type == "cuda")
    assert kernels.supported(qkv, 20) == (qkv.device.type == "cuda")


def test_without_jagged_tensors_it_is_unsupported_and_refuses(monkeypatch, device):
    layout, qkv = _batch(device)
    monkeypatch.setattr(kernels, "_JAGGED", None)
    assert not kernels.supported(qkv, 20)
    with pytest.raises(RuntimeError, match="needs torch.nested.nested_tensor_from_jagged"):
        kernels.attention_varlen(qkv, layout.segments, layout.n, 20)


def test_the_tests_run_the_jagged_path_not_the_fallback():
    """Without this, every test above could pass on the per-sequence loop alone."""
    assert kernels._JAGGED is torch.nested.nested_tensor_from_jagged


def test_an_empty_batch_gives_zeros(device):
    qkv = torch.randn(32, 3 * 640, device=device)
    got = kernels.attention_varlen(qkv, [(0, 0)], 0, 20)
    assert got.shape == (32, 640) and torch.count_nonzero(got) == 0


@pytest.mark.parametrize(
    ("segments", "n", "message"),
    [
        ([(0, 5), (6, 3)], 9, "tile rows 0:9 in order without gaps"),
        ([(1, 5)], 6, "tile rows 0:6"),
        ([(0, 5), (5, 3)], 9, "segments cover 8 rows, but n=9"),
    ],
)
def test_segments_that_do_not_tile_the_rows_are_refused(segments, n, message):
    with pytest.raises(ValueError, match=message):
        kernels.attention_varlen(torch.zeros(16, 3 * 64), segments, n, 8)


def test_supported_needs_cuda_a_fused_dtype_and_head_size(monkeypatch):
    assert not kernels.supported(torch.zeros(4, 3 * 640), 20)  # the CPU has its own kernels
    takes = kernels._fused_kernel_takes
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert takes(dtype, 3 * 640, 20) and takes(dtype, 3 * 1280, 20)  # RNA-FM, mRNA-FM
    assert not takes(torch.float64, 3 * 640, 20)
    assert not takes(torch.float32, 3 * 240, 20)  # head size 12
    assert not takes(torch.float32, 3 * 512 * 2, 2)  # head size 512
    assert not takes(torch.float32, 3 * 640 + 1, 20)
    # a fused kernel switched off by the user is respected: float32 needs the efficient one
    monkeypatch.setattr(torch.backends.cuda, "mem_efficient_sdp_enabled", lambda: False)
    assert not takes(torch.float32, 3 * 640, 20) and takes(torch.bfloat16, 3 * 640, 20)
    monkeypatch.setattr(torch.backends.cuda, "flash_sdp_enabled", lambda: False)
    assert not takes(torch.bfloat16, 3 * 640, 20)


def test_the_cuda_kernels_module_imports_torch_only():
    tree = ast.parse(Path(kernels.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}  # fmt: skip
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.level == 0}  # fmt: skip
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert imported <= {"__future__", "functools", "inspect", "torch"} and not relative


def test_a_failing_varlen_kernel_falls_back_to_the_padded_call(monkeypatch, caplog):
    """A fused kernel that declines inputs supported() accepted ("No viable backend") must
    not crash the forward pass: padded attention from then on, one warning per process."""
    import logging

    import rnafm_sklearn._encoder_attention as enc

    lengths = [9, 3, 14]
    pad = torch.arange(14)[None, :] >= torch.tensor(lengths)[:, None]
    layout = enc._Layout(pad)
    qkv = torch.randn(layout.rows, 3 * 32, generator=torch.Generator().manual_seed(1))
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("No viable backend for scaled_dot_product_attention was found.")

    monkeypatch.setattr(enc, "_VARLEN_FAILED", False)
    monkeypatch.setattr(enc.cuda_kernels, "supported", lambda qkv, num_heads: True)
    monkeypatch.setattr(enc.cuda_kernels, "attention_varlen", broken)
    want = enc._attention_padded(qkv, layout, 4)
    with caplog.at_level(logging.WARNING, logger="rnafm_sklearn"):
        first = enc._attention_on_device(qkv, layout, 4)
        second = enc._attention_on_device(qkv, layout, 4)
    torch.testing.assert_close(first, want)
    torch.testing.assert_close(second, want)
    assert len(calls) == 1  # not retried once it failed
    assert caplog.text.count("variable-length attention kernel failed") == 1
    assert "No viable backend" in caplog.text

    # out of memory is not the kernel's fault: it propagates (the batch is halved upstream)
    monkeypatch.setattr(enc, "_VARLEN_FAILED", False)

    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(enc.cuda_kernels, "attention_varlen", oom)
    with pytest.raises(torch.OutOfMemoryError):
        enc._attention_on_device(qkv, layout, 4)
    assert enc._VARLEN_FAILED is False
