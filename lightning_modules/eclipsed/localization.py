"""LELSD's localization score and decorrelation penalty (Pajouheshgar et al. 2021, sec. 3).

Localization score of an edit at one generator layer: the share of the layer's feature change
that falls inside the part's mask,

    score_l = sum_xy(mask_l * diff_l) / (sum_xy(diff_l) + eps),
    diff_l  = mean over channels of (F_l(original) - F_l(edit))^2,

with the mask (the average of the part's masks on the original and on the edit, no gradient)
resized bilinearly to the layer's resolution. The loss is minus the layers' mean score: -1 is a
change entirely inside the part, 0 one entirely outside.

Decorrelation (K > 1 directions): the mean absolute off-diagonal correlation between the
directions, per layer in W+; zero for orthogonal directions.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-6


def combined_mask(original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """LELSD's 'average' aggregation of the part's masks (B x 1 x H x W) before and after the edit:
    a part that grows or shrinks with the edit counts half inside."""
    return (0.5 * original + 0.5 * edited).detach()


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if mask.shape[-2:] == tuple(size):
        return mask
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=True)


def feature_change(original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """B x C x H x W feature maps -> B x H x W squared change, averaged over channels (LELSD's L2)."""
    return (original - edited).square().mean(dim=1)


def localization_scores(original: Sequence[torch.Tensor], edited: Sequence[torch.Tensor],
                        mask: torch.Tensor) -> torch.Tensor:
    """Per-image localization score (B,), averaged over the given layers' feature maps."""
    if len(original) != len(edited) or not original:
        raise ValueError("one original and one edited feature map per localization layer")
    scores = []
    for before, after in zip(original, edited):
        diff = feature_change(before.detach(), after)
        inside = resize_mask(mask, diff.shape[-2:])[:, 0]
        scores.append((diff * inside).sum(dim=(1, 2)) / (diff.sum(dim=(1, 2)) + EPS))
    return torch.stack(scores).mean(0)


def localization_loss(original: Sequence[torch.Tensor], edited: Sequence[torch.Tensor],
                      mask: torch.Tensor) -> torch.Tensor:
    """LELSD's localization loss: minus the mean localization score (-1 best, 0 worst)."""
    return -localization_scores(original, edited, mask).mean()


def correlation_penalty(directions: torch.Tensor) -> torch.Tensor:
    """Mean |off-diagonal correlation| of K directions: K x D, or K x L x D (per layer, averaged).
    Zero for K = 1."""
    if directions.ndim == 2:
        directions = directions[:, None]
    k = directions.shape[0]
    if k < 2:
        return directions.new_zeros(())
    per_layer = directions.transpose(0, 1)                        # L x K x D
    unit = F.normalize(per_layer, dim=-1)
    correlation = unit @ unit.transpose(1, 2)                     # L x K x K
    off_diagonal = correlation - torch.eye(k, device=directions.device, dtype=directions.dtype)
    return off_diagonal.abs().mean()
