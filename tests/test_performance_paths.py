"""Behaviour of the fast paths: OOM back-off, thread settings, reduced precision."""

import logging

import numpy as np
import pytest
import torch
from _tolerance import assert_close
from conftest import TINY_PTH

import rnafm_sklearn._models as models
from rnafm_sklearn import RnaFmEmbedder
from rnafm_sklearn._windows import pack_batches

MODEL = str(TINY_PTH)


def emb(**kw):
    return RnaFmEmbedder(model=MODEL, progress=False, **kw)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        # the CPU allocator's own words (a plain RuntimeError): retried in halves as well
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 8589934592 bytes."
        ),
    ],
    ids=["cuda", "cpu"],
)
def test_out_of_memory_halves_the_batch_and_retries(monkeypatch, caplog, real_sequences, error):
    expected = emb(batch_tokens=1_000_000).transform(real_sequences)
    encoder = models.get_encoder(MODEL, torch.device("cpu"), torch.float32)
    real_forward = type(encoder).forward
    sizes = []

    def forward(self, tokens, layers=-1):
        sizes.append(tokens.shape[0])
        if tokens.shape[0] > 3:
            raise error
        return real_forward(self, tokens, layers)

    monkeypatch.setattr(type(encoder), "forward", forward)
    with caplog.at_level(logging.WARNING, logger="rnafm_sklearn"):
        X = emb(batch_tokens=1_000_000).transform(real_sequences)
    assert_close(X, expected)  # other batches than the reference's
    assert sizes[0] == len(real_sequences) and max(sizes[1:]) <= len(real_sequences) // 2
    assert "Out of memory on a batch of 24 sequences; retrying in halves." in caplog.text


def test_other_runtime_errors_are_not_swallowed(monkeypatch, real_sequences):
    encoder = models.get_encoder(MODEL, torch.device("cpu"), torch.float32)

    def forward(self, tokens, layers=-1):
        raise RuntimeError("something else broke")

    monkeypatch.setattr(type(encoder), "forward", forward)
    with pytest.raises(RuntimeError, match="something else broke"):
        emb().transform(real_sequences)


def test_user_thread_setting_is_respected(real_sequences):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        emb().transform(real_sequences[:3])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bfloat16_is_close_to_float32(real_sequences):
    a = emb().transform(real_sequences)
    b = emb(dtype="bfloat16").transform(real_sequences)
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999
    assert np.abs(a - b).max() > 1e-4  # and it really ran in reduced precision


@pytest.mark.parametrize("budget", [1, 50, 1024, 10_000])
def test_pack_batches_respects_the_budget(budget):
    rng = np.random.default_rng(budget)
    lengths = rng.integers(3, 1025, size=300).tolist()
    batches = pack_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert width * len(b) <= budget or len(b) == 1
    # longest first, and each batch as full as the budget allows
    widths = [max(lengths[i] for i in b) for b in batches]
    assert widths == sorted(widths, reverse=True)


def test_host_copies_are_read_one_batch_later_and_the_last_even_on_interrupt(monkeypatch):
    """Batch k's pooled rows are read (and handed to the sink) after batch k+1 is launched,
    so that a GPU copy overlaps the next batch; the last batch is delivered on an interrupt too.
    """
    import rnafm_sklearn._inference as inference

    encoder = models.get_encoder(MODEL, torch.device("cpu"), torch.float32)
    seqs = [bytes([4 + i % 4] * 40) for i in range(6)]  # one token kind per row: 6 distinct
    plan = inference.Plan(layers=(2,), window_stride=511)
    events = []
    real_to_host = inference._to_host

    def to_host(rows):
        host, wait = real_to_host(rows)
        batch = len([e for e in events if e[0] == "launched"])
        events.append(("launched", batch))
        return host, lambda: (wait(), events.append(("read", batch)))

    monkeypatch.setattr(inference, "_to_host", to_host)
    runner = inference.Runner(encoder, batch_tokens=2 * 42)  # two sequences per batch
    got = runner.pooled(seqs, plan, sink=lambda idx, rows: events.append(("sink", tuple(idx))))
    reads = [e for e in events if e[0] != "sink"]
    assert reads == [
        ("launched", 0), ("launched", 1), ("read", 0), ("launched", 2), ("read", 1), ("read", 2)
    ]  # fmt: skip
    assert sorted(i for e in events if e[0] == "sink" for i in e[1]) == list(range(6))
    np.testing.assert_array_equal(
        got, inference.Runner(encoder, batch_tokens=4096).pooled(seqs, plan)
    )

    # an interrupt while batch 2 computes: batches 0 and 1 still reach the sink (the cache)
    events.clear()
    calls = []

    def progress(n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    runner.progress = progress
    sunk = []
    with pytest.raises(KeyboardInterrupt):
        runner.pooled(seqs, plan, sink=lambda idx, rows: sunk.extend(idx))
    assert len(sunk) == 4


def test_the_host_copy_waits_on_the_stream_of_the_rows_device(monkeypatch):
    """With the encoder on cuda:1 while cuda:0 is current, the copy runs on cuda:1's stream:
    the event must be recorded there, or the rows are read before they have arrived."""
    import rnafm_sklearn._inference as inference

    class Rows:  # stands in for a float32 tensor on cuda:1
        device, shape, dtype = torch.device("cuda", 1), (2, 3), torch.float32

    class Host:
        def copy_(self, src, non_blocking=False):
            copies.append((src.device, non_blocking))
            return self

    class Event:
        def record(self, stream=None):
            # no stream: torch records on the current stream of the *current* device
            recorded.append(stream if stream is not None else current_stream())

        def synchronize(self):
            pass

    def current_stream(device=None):
        return ("stream of", torch.device(device if device is not None else "cuda:0"))

    copies, recorded = [], []
    monkeypatch.setattr(torch, "empty", lambda *a, **k: Host())
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    host, wait = inference._to_host(Rows())
    monkeypatch.undo()
    assert isinstance(host, Host) and copies == [(torch.device("cuda", 1), True)]
    assert recorded == [("stream of", torch.device("cuda", 1))]
    assert isinstance(getattr(wait, "__self__", None), Event)  # its synchronize, not a no-op


def test_on_the_cpu_each_batch_reaches_the_sink_before_the_next_batch_runs():
    """Only an asynchronous (GPU) copy is read one batch later: on the CPU the rows are on the
    host at once, and the cache commits each batch before the next one is computed."""
    from rnafm_sklearn._inference import Plan, Runner

    encoder = models.get_encoder(MODEL, torch.device("cpu"), torch.float32)
    seqs = [bytes([4 + i % 4] * 40) for i in range(6)]
    events = []
    runner = Runner(encoder, batch_tokens=2 * 42, progress=lambda n: events.append("computed"))
    plan = Plan(layers=(2,), window_stride=511)
    runner.pooled(seqs, plan, sink=lambda idx, rows: events.append("sunk"))
    assert events == ["computed", "sunk"] * 3
