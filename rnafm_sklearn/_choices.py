"""The choices of the estimators' parameters, in one torch-free place.

The command line builds its parser from these before importing torch (``--help`` and usage
errors answer at once); the estimators validate against the same tuples.
"""

from __future__ import annotations

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_BATCH_TOKENS",
    "DTYPE_NAMES",
    "KINDS",
    "METHODS",
    "POLICIES",
    "POOLINGS",
    "POOLING_CHOICES",
    "TRUNCATION_SIDES",
    "default_batch_tokens",
]

POOLINGS = ("mean", "max", "cls", "eos")
POOLING_CHOICES = (*POOLINGS, "mean+max")
AGGREGATIONS = ("concat", "mean")
POLICIES = ("error", "truncate", "window")
TRUNCATION_SIDES = ("right", "left")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# Token budget per forward pass. CPU: the batch-budget sweep of benchmarks/throughput.py is
# flat within a few per cent from 512 to 2048 tokens and 1024 fits one sequence of the maximal
# length. CUDA and MPS: sized for the memory of common cards, halved on out-of-memory.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 32768, "mps": 8192}


def default_batch_tokens(batch_tokens: int | None, device_type: str) -> int:
    """The token budget: ``batch_tokens`` if set, else the default of the device type."""
    return batch_tokens or DEFAULT_BATCH_TOKENS.get(device_type, 4096)


# masked-LM scoring: the variant-score conventions and the likelihood features
METHODS = ("wt-marginal", "masked-marginal", "mutant-marginal", "pseudo-likelihood")
KINDS = ("pseudo", "unmasked", "both")
