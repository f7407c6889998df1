"""Small models for the training tests that need something other than biformer_nano (importable by name)."""

import torch
from torch import nn

from bralib.ops import BiLevelRoutingAttention


class ToyBra(nn.Module):
    """Patchify 4x4, one BRA layer, mean-pool, linear head: no BatchNorm, so accumulation is exactly checkable."""

    def __init__(self, num_classes: int = 2, drop_path_rate: float = 0.0, dim: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)
        self.attn = BiLevelRoutingAttention(dim, 2, n_win=4, topk=2)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)  # (B, H/4, W/4, dim)
        x = x + self.attn(self.norm(x))
        return self.head(x.mean((1, 2)))


def toy_bra(num_classes: int = 2, drop_path_rate: float = 0.0, **kwargs) -> ToyBra:
    return ToyBra(num_classes, drop_path_rate, **kwargs)
