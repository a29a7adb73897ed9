"""Helpers around the official ``rna-fm`` package (import name ``fm``): the parity reference.

``make_official_checkpoint`` writes a random RNA-FM in the layout of the released
``RNA-FM_pretrained.pth``: a pickled dict with ``"model"`` (prefixed state keys) and ``"args"``
(an ``argparse.Namespace`` with fairseq ``encoder_*`` names and unrelated training entries), plus
training leftovers at the top level. Weights follow BERT initialisation (normal, std 0.02) and
LayerNorm affine parameters are randomised, so that a wrong LayerNorm eps or a missing
rescaling shows up well above the parity tolerance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fm
import torch

THEMES = {"rna": "rna", "codon": "rna-3mer"}


def make_official_checkpoint(
    path: str | Path,
    *,
    layers: int = 2,
    embed_dim: int = 32,
    heads: int = 4,
    ffn: int = 64,
    alphabet: str = "rna",
    token_dropout: bool | None = False,
    emb_layer_norm_before: bool = True,
    prefix: str = "encoder.encoder.",
    contact_head: bool = True,
    seed: int = 0,
    max_positions: int = 1024,
) -> Path:
    """Write a random official-format checkpoint; return its path."""
    path = Path(path)
    alpha = fm.Alphabet.from_architecture("roberta_large", THEMES[alphabet])
    args = dict(
        arch="roberta_large",
        encoder_layers=layers,
        encoder_embed_dim=embed_dim,
        encoder_ffn_embed_dim=ffn,
        encoder_attention_heads=heads,
        max_positions=max_positions,
        # unrelated training entries, as fairseq leaves them
        encoder_normalize_before=True,
        encoder_learned_pos=True,
        dropout=0.1,
        attention_dropout=0.1,
        lr=[0.0001],
        max_tokens=8192,
        seed=1,
        task="masked_lm",
        criterion="masked_lm",
        data="/mnt/data/rnacentral",
    )
    if token_dropout is not None:
        args["token_dropout"] = token_dropout
    model_args = argparse.Namespace(
        arch="roberta_large",
        layers=layers,
        embed_dim=embed_dim,
        ffn_embed_dim=ffn,
        attention_heads=heads,
        max_positions=max_positions,
        emb_layer_norm_before=emb_layer_norm_before,
    )
    gen = torch.Generator().manual_seed(seed)
    model = fm.BioBertModel(model_args, alpha)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "layer_norm" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    # No clone: the tied lm_head.weight shares storage with embed_tokens.weight, as in a
    # fairseq checkpoint, so the official loader's zeroing of the <mask> row sticks.
    state = {
        k: v
        for k, v in model.state_dict().items()
        if contact_head or not k.startswith("contact_head.")
    }
    state = {prefix + k: v for k, v in state.items()}
    data = {
        "args": argparse.Namespace(**args),
        "model": state,
        "optimizer_history": [{"criterion_name": "MaskedLmLoss", "num_updates": 1000}],
        "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3}},
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.zeros(3)}}},
    }
    torch.save(data, path)
    return path


def load_official(path: str | Path, alphabet: str = "rna"):
    """Load a checkpoint with the official loader (Namespace allow-listed for torch >= 2.6)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, alpha = fm.pretrained.load_model_and_alphabet_local(
            str(path), theme=THEMES[alphabet]
        )
    return model.eval(), alpha


def official_tokens(alpha, sequences: list[str]) -> torch.Tensor:
    """Token ids from the official batch converter (padded batch)."""
    _, _, tokens = alpha.get_batch_converter()([(str(i), s) for i, s in enumerate(sequences)])
    return tokens


@torch.no_grad()
def official_hidden_states(model, alpha, sequences: list[str], layers) -> dict[int, torch.Tensor]:
    tokens = official_tokens(alpha, sequences)
    return model(tokens, repr_layers=list(layers))["representations"]
