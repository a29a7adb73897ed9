"""The official structure predictor (``fm.downstream.Baseline``) with random weights.

``make_official_structure`` builds ``Baseline(backbone_name="rna-fm",
pairwise_predictor_name="pc-resnet_1_sym_first:r-ss", backbone_frozen=1)`` around a local random
backbone (``choose_backbone`` is patched: it downloads otherwise), randomises every head weight,
the BatchNorm running statistics included, and saves the state dict in the layout of the
released ``RNA-FM-ResNet_PDB-All.pth`` (``backbone.*`` + ``downstream_modules.<head>.*``).
Scales are chosen so that the logits spread over a few units: a sigmoid comparison then tests
every weight, not saturated outputs.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import fm.downstream.baseline as fm_baseline
import torch
from _official import load_official, make_official_checkpoint, official_tokens

HEAD = "pc-resnet_1_sym_first:r-ss"


def make_official_structure(
    folder: str | Path,
    *,
    embed_dim: int = 32,
    heads: int = 4,
    ffn: int = 64,
    seed: int = 0,
    name: str = "RNA-FM-ResNet_test.pth",
):
    """Write a random official structure checkpoint; return ``(path, baseline, alphabet)``.

    The backbone has 12 layers (the head reads layer 12) of width ``embed_dim``; the head is
    full size (640 -> 128 projection aside, which follows ``embed_dim``; 64 channels,
    32 blocks). The returned ``Baseline`` is in eval mode.
    """
    folder = Path(folder)
    backbone_file = make_official_checkpoint(
        folder / "RNA-FM_backbone.pth",
        layers=12,
        embed_dim=embed_dim,
        heads=heads,
        ffn=ffn,
        seed=seed,
    )
    backbone, alpha = load_official(backbone_file)
    with mock.patch.object(fm_baseline, "choose_backbone", lambda _name: (backbone, alpha)):
        model = fm_baseline.Baseline(
            backbone_name="rna-fm", pairwise_predictor_name=HEAD, backbone_frozen=1
        )
    gen = torch.Generator().manual_seed(seed + 1)
    head = model.downstream_modules[HEAD]

    def normal(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=gen)

    with torch.no_grad():
        for pname, p in head.named_parameters():
            if pname.endswith("bn1.weight"):
                p.copy_(normal(p.shape, 0.2, 1.0))
            elif pname.endswith("bn1.bias"):
                p.copy_(normal(p.shape, 0.2))
            elif "resnet" in pname:  # 3x3 block convolutions
                p.copy_(normal(p.shape, 0.02))
            elif pname.startswith("proj.final"):
                p.copy_(normal(p.shape, 0.05))
            else:  # projection and first 1x1 convolution
                p.copy_(normal(p.shape, 0.1))
        for bname, b in head.named_buffers():
            if bname.endswith("running_mean"):
                b.copy_(normal(b.shape, 0.2))
            elif bname.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
            elif bname.endswith("num_batches_tracked"):
                b.fill_(1000)
    model.eval()
    path = folder / name
    torch.save(model.state_dict(), path)
    return path, model, alpha


@torch.no_grad()
def official_probabilities(model, alpha, sequence: str) -> torch.Tensor:
    """``sigmoid(Baseline(...)["r-ss"])`` of one sequence run alone: (L, L)."""
    tokens = official_tokens(alpha, [sequence])
    return torch.sigmoid(model({"token": tokens})["r-ss"][0])
