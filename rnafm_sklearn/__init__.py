"""rnafm_sklearn: RNA-FM embeddings as a scikit-learn transformer.

Public API (everything else is private)::

    from rnafm_sklearn import (
        RnaFmEmbedder,                                   # the scikit-learn transformer
        RnaFmLikelihood, RnaFmVariantScorer, score_variants,  # masked-LM scoring
        RnaFmClassifier, RnaFmRegressor,                 # fine-tuning
        load_model, save_model, convert_checkpoint,      # checkpoints
        read_config,                                     # a checkpoint's architecture, no weights
        RnaFmConfig, RnaFmEncoder,                       # the PyTorch model
        get_alphabet, normalize_sequences, Alphabet,     # tokens and input checks
        cache_dir, pretrained_path, PRETRAINED,          # pretrained weights
        read_fasta,                                      # FASTA (plain or gzip) to a Series
        clear_model_cache,                               # free loaded weights
        EmbeddingCache,                                  # persistent embedding store
        CheckpointError, EmbeddingCacheError, InvalidParameterError, WeightsUnavailableError,
        WeightsChangedError,
    )
"""

from ._alphabet import Alphabet, get_alphabet, normalize_sequences
from ._cache import EmbeddingCache, EmbeddingCacheError
from ._checkpoint import convert_checkpoint, load_model, read_config, save_model
from ._embedder import RnaFmEmbedder
from ._encoder import RnaFmConfig, RnaFmEncoder
from ._errors import (
    CheckpointError,
    InvalidParameterError,
    WeightsChangedError,
    WeightsUnavailableError,
)
from ._finetune import RnaFmClassifier, RnaFmRegressor
from ._hub import PRETRAINED, cache_dir, pretrained_path
from ._io import read_fasta
from ._models import clear_model_cache
from ._scoring import RnaFmLikelihood, RnaFmVariantScorer, score_variants

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
    "RnaFmVariantScorer",
    "WeightsChangedError",
    "WeightsUnavailableError",
    "cache_dir",
    "clear_model_cache",
    "convert_checkpoint",
    "get_alphabet",
    "load_model",
    "normalize_sequences",
    "pretrained_path",
    "read_config",
    "read_fasta",
    "save_model",
    "score_variants",
]
