"""The architecture of an RNA-FM encoder: :class:`RnaFmConfig`, a frozen dataclass.

Plain data (widths, depth, alphabet, the checkpoint's flags), checked on construction; the
encoder (:mod:`._encoder`) is built from it and the checkpoint readers translate every file
format into it. No torch here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ._alphabet import get_alphabet

__all__ = ["RnaFmConfig"]


@dataclass(frozen=True)
class RnaFmConfig:
    """Architecture of an RNA-FM encoder.

    The defaults are the released RNA-FM (``rna_fm_t12``); :meth:`mrna_fm` gives mRNA-FM.

    Parameters
    ----------
    num_layers : int, default=12
        Transformer layers.
    hidden_size : int, default=640
        Width of the residual stream.
    num_heads : int, default=20
        Attention heads; ``hidden_size`` must be divisible by it.
    ffn_size : int, default=5120
        Width of the feed-forward layer.
    max_positions : int, default=1024
        Most tokens per forward pass, ``<cls>`` and ``<eos>`` included.
    alphabet : {"rna", "codon"}, default="rna"
        Token vocabulary (see :func:`rnafm_sklearn.get_alphabet`).
    emb_layer_norm_before : bool, default=True
        Whether a LayerNorm follows the embeddings (RNA-FM: yes, mRNA-FM: no).
    token_dropout : bool, default=False
        The ESM ``token_dropout`` flag of the checkpoint: zero ``<mask>`` embeddings and
        rescale the others by ``0.88 / (1 - observed mask ratio)``.
    layer_norm_eps : float, default=1e-5
        Epsilon of every LayerNorm (the official value; not 1e-12).

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmConfig
    >>> RnaFmConfig().head_dim
    32
    """

    num_layers: int = 12
    hidden_size: int = 640
    num_heads: int = 20
    ffn_size: int = 5120
    max_positions: int = 1024
    alphabet: str = "rna"
    emb_layer_norm_before: bool = True
    token_dropout: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        get_alphabet(self.alphabet)  # raises on an unknown name
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}."
            )

    @classmethod
    def mrna_fm(cls) -> RnaFmConfig:
        """The architecture of the released mRNA-FM (codon tokens, hidden size 1280).

        Returns
        -------
        RnaFmConfig
            12 layers of width 1280, 20 heads, codon alphabet, no embedding LayerNorm.

        Raises
        ------
        None

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmConfig
        >>> config = RnaFmConfig.mrna_fm()
        >>> config.hidden_size, config.alphabet
        (1280, 'codon')
        """
        return cls(hidden_size=1280, alphabet="codon", emb_layer_norm_before=False)

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``hidden_size // num_heads``."""
        return self.hidden_size // self.num_heads

    @property
    def vocab_size(self) -> int:
        """Number of tokens of the alphabet (rows of the embedding matrix)."""
        return len(get_alphabet(self.alphabet))

    @property
    def padding_idx(self) -> int:
        """Id of ``<pad>`` in the alphabet."""
        return get_alphabet(self.alphabet).padding_idx

    @property
    def max_sequence_tokens(self) -> int:
        """Most sequence tokens (nucleotides or codons) per forward pass."""
        return self.max_positions - 2

    def to_dict(self) -> dict[str, object]:
        """The fields as a plain dict (JSON-serialisable; ``RnaFmConfig(**d)`` rebuilds it).

        Returns
        -------
        dict of str to object
            One entry per field.

        Raises
        ------
        None

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmConfig
        >>> RnaFmConfig(**RnaFmConfig().to_dict()) == RnaFmConfig()
        True
        """
        return asdict(self)
