"""One description per model family: the only place names, units and prefixes are derived.

Pure Python (no torch, no scikit-learn). A family is identified by the name of its token
alphabet (``RnaFmConfig.alphabet``): ``"rna"`` is RNA-FM, ``"codon"`` is mRNA-FM. Everything a
message, a feature name or a progress bar says about "the model" comes from here, so that a new
member (another RNA model, the masked-LM head) plugs in at one place.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "ModelFamily", "family"]


@dataclass(frozen=True)
class ModelFamily:
    """What users see of one model family.

    Attributes
    ----------
    alphabet : str
        Name of the token alphabet (see :func:`rnafm_sklearn.get_alphabet`); the family's key.
    display_name : str
        The model as papers and messages name it (``"RNA-FM"``).
    feature_prefix : str
        Prefix of output column names (``"rnafm"`` gives ``rnafm_l12_mean_0``).
    k : int
        Nucleotides per token (1, or 3 for codons).
    unit, units : str
        One token in words, singular and plural (``"nt"``/``"nt"``, ``"codon"``/``"codons"``).
    pretrained : str
        Name of the released weights in ``PRETRAINED``.
    """

    alphabet: str
    display_name: str
    feature_prefix: str
    k: int
    unit: str
    units: str
    pretrained: str

    def count(self, n: int) -> str:
        """``"1022 nt"``, ``"1 codon"``: a token count in the family's unit."""
        return f"{n} {self.unit if n == 1 else self.units}"


FAMILIES: dict[str, ModelFamily] = {
    "rna": ModelFamily("rna", "RNA-FM", "rnafm", 1, "nt", "nt", "rna-fm"),
    "codon": ModelFamily("codon", "mRNA-FM", "mrnafm", 3, "codon", "codons", "mrna-fm"),
}


def family(alphabet: str) -> ModelFamily:
    """The family whose models read ``alphabet`` tokens."""
    try:
        return FAMILIES[alphabet]
    except KeyError:
        raise ValueError(
            f"Unknown alphabet {alphabet!r}; expected one of {sorted(FAMILIES)}."
        ) from None
