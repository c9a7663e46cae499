"""DeSKPro's losses (eq. 3-7) on top of torchreid's cross-entropy and batch-hard triplet loss."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Cython evaluation")
    from torchreid.reid.losses import CrossEntropyLoss, TripletLoss


def cloth_irrelevant_target(cloth_mask: torch.Tensor, size: tuple[int, int], epsilon: float) -> torch.Tensor:
    """Psi~' of eq. 3-4: epsilon on cloth pixels, 1 elsewhere, resized to the attention map.

    cloth_mask: (B, H, W), 1 where the parsing map has a cloth class. Area resizing keeps the
    fraction of cloth in each attention cell instead of picking one pixel of it.
    """
    target = 1.0 - (1.0 - epsilon) * cloth_mask.float()
    return F.adaptive_avg_pool2d(target[:, None], size)


def mask_guided_attention_loss(attention: torch.Tensor, cloth_mask: torch.Tensor, epsilon: float) -> torch.Tensor:
    """L_att (eq. 4): mean squared error between Psi_hat and the cloth-irrelevant target."""
    target = cloth_irrelevant_target(cloth_mask, tuple(attention.shape[-2:]), epsilon)
    return F.mse_loss(attention.float(), target)


def facial_knowledge_propagation_loss(teacher_logits: list[torch.Tensor], student_logits: list[torch.Tensor],
                                      temperature: float) -> torch.Tensor:
    """L_fkp (eq. 5): tau^2 * sum_i KL(S(I_t^i / tau) || S(I_s^i / tau)), batch mean.

    tau^2 keeps the gradient scale independent of the temperature (Hinton et al.).
    """
    total = student_logits[0].new_zeros(())
    for teacher, student in zip(teacher_logits, student_logits, strict=True):
        log_student = F.log_softmax(student.float() / temperature, dim=1)
        log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
        total = total + F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature ** 2 * total


class IdentityLosses(nn.Module):
    """Sum of label-smoothed CE over a logit set I and batch-hard triplet over a feature set R (eq. 6)."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.1, triplet_margin: float = 0.3):
        super().__init__()
        self.cross_entropy = CrossEntropyLoss(num_classes, eps=label_smoothing, use_gpu=False,
                                              label_smooth=label_smoothing > 0)
        self.triplet = TripletLoss(margin=triplet_margin)

    def ce(self, logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        # torchreid builds its smoothed targets on the CPU and moves them with .cuda() only
        # when told to: tell it where these logits live.
        self.cross_entropy.use_gpu = labels.is_cuda
        return sum(self.cross_entropy(logit.float(), labels) for logit in logits)

    def trip(self, features: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        # Batch-hard mining needs a positive and a negative for every anchor.
        if labels.numel() < 2 or labels.unique().numel() < 2:
            return features[0].new_zeros(())
        return sum(self.triplet(feature.float(), labels) for feature in features)


@dataclass
class LossTerms:
    """The terms of eq. 7, kept apart so every one of them is logged."""

    attention: torch.Tensor
    triplet: torch.Tensor
    fkp: torch.Tensor
    ce_student: torch.Tensor
    ce_global: torch.Tensor

    def total(self, attention_weight: float, alpha: float) -> torch.Tensor:
        """L = lambda L_att + L_trip + (alpha L_fkp + (1 - alpha) L_ce^s) + L_ce^g."""
        return (attention_weight * self.attention + self.triplet
                + alpha * self.fkp + (1 - alpha) * self.ce_student + self.ce_global)
