"""rnafm_sklearn: RNA-FM embeddings as a scikit-learn transformer.

Public API (everything else is private)::

    from rnafm_sklearn import (
        RnaFmEmbedder,                                   # the scikit-learn transformer
        RnaFmLikelihood, RnaFmVariantScorer, score_variants,  # masked-LM scoring
        RnaFmClassifier, RnaFmRegressor,                 # fine-tuning
        RnaFmStructurePredictor,                         # secondary structure
        load_model, save_model, convert_checkpoint,      # checkpoints
        read_config,                                     # a checkpoint's architecture, no weights
        RnaFmConfig, RnaFmEncoder,                       # the PyTorch model
        get_alphabet, normalize_sequences, Alphabet,     # tokens and input checks
        cache_dir, pretrained_path, PRETRAINED,          # pretrained weights
        read_fasta,                                      # FASTA (plain or gzip) to a Series
        read_structures, write_structures, base_pair_f1, # dot-bracket / CT / BPSEQ, pair F1
        clear_model_cache,                               # free loaded weights
        EmbeddingCache,                                  # persistent embedding store
        CheckpointError, EmbeddingCacheError, InvalidParameterError, WeightsUnavailableError,
        WeightsChangedError,
    )
"""

# The public names are imported on first use (PEP 562): ``import rnafm_sklearn`` and the
# command line's ``--help`` do not pay for torch. A new public name goes into _EXPORTS,
# the TYPE_CHECKING block and __all__.
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._alphabet import Alphabet, get_alphabet, normalize_sequences
    from ._cache import EmbeddingCache, EmbeddingCacheError
    from ._checkpoint import convert_checkpoint, load_model, read_config
    from ._checkpoint_native import save_model
    from ._classifier import RnaFmClassifier
    from ._embedder import RnaFmEmbedder
    from ._encoder import RnaFmEncoder
    from ._encoder_config import RnaFmConfig
    from ._errors import (
        CheckpointError,
        InvalidParameterError,
        WeightsChangedError,
        WeightsUnavailableError,
    )
    from ._hub import PRETRAINED, cache_dir, pretrained_path
    from ._io import read_fasta
    from ._likelihood import RnaFmLikelihood
    from ._models import clear_model_cache
    from ._regressor import RnaFmRegressor
    from ._structure import RnaFmStructurePredictor
    from ._structure_files import base_pair_f1, read_structures, write_structures
    from ._variant_scorer import RnaFmVariantScorer, score_variants

_EXPORTS = {
    "Alphabet": "_alphabet",
    "get_alphabet": "_alphabet",
    "normalize_sequences": "_alphabet",
    "EmbeddingCache": "_cache",
    "EmbeddingCacheError": "_cache",
    "convert_checkpoint": "_checkpoint",
    "load_model": "_checkpoint",
    "read_config": "_checkpoint",
    "save_model": "_checkpoint_native",
    "RnaFmClassifier": "_classifier",
    "RnaFmEmbedder": "_embedder",
    "RnaFmConfig": "_encoder_config",
    "RnaFmEncoder": "_encoder",
    "CheckpointError": "_errors",
    "InvalidParameterError": "_errors",
    "WeightsChangedError": "_errors",
    "WeightsUnavailableError": "_errors",
    "PRETRAINED": "_hub",
    "cache_dir": "_hub",
    "pretrained_path": "_hub",
    "read_fasta": "_io",
    "RnaFmLikelihood": "_likelihood",
    "clear_model_cache": "_models",
    "RnaFmRegressor": "_regressor",
    "RnaFmStructurePredictor": "_structure",
    "base_pair_f1": "_structure_files",
    "read_structures": "_structure_files",
    "write_structures": "_structure_files",
    "RnaFmVariantScorer": "_variant_scorer",
    "score_variants": "_variant_scorer",
}

__version__ = "0.1.0"  # the one place; pyproject.toml reads it (dynamic version)

__all__ = [
    "PRETRAINED",
    "Alphabet",
    "CheckpointError",
    "EmbeddingCache",
    "EmbeddingCacheError",
    "InvalidParameterError",
    "RnaFmEmbedder",
    "RnaFmClassifier",
    "RnaFmConfig",
    "RnaFmEncoder",
    "RnaFmLikelihood",
    "RnaFmRegressor",
    "RnaFmStructurePredictor",
    "RnaFmVariantScorer",
    "WeightsChangedError",
    "WeightsUnavailableError",
    "base_pair_f1",
    "cache_dir",
    "clear_model_cache",
    "convert_checkpoint",
    "get_alphabet",
    "load_model",
    "normalize_sequences",
    "pretrained_path",
    "read_config",
    "read_fasta",
    "read_structures",
    "save_model",
    "score_variants",
    "write_structures",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
