"""DINO: self-distillation with no labels (Caron et al. 2021), for the tiny ViT the DINO
metric reads.

A student and a teacher of the same architecture (the ViT and a projection head) see different
views of an image (multicrop.py). The teacher sees the two global views (with a subject mask,
the subject alone); the student sees every view (with masks, often on a random scene), and
learns to predict, from each of its views, the teacher's distribution over K prototypes for
each *other* view (cross-entropy, eq. 1 of the paper). No gradient reaches the teacher: it is an
exponential moving average of the student (momentum rising on a cosine to 1; DINO starts at
0.996, a short run lower). Collapse
is avoided by centring the teacher's outputs (an EMA of their batch mean, subtracted) and
sharpening them (a low teacher temperature): centring alone would flatten the targets,
sharpening alone would let one prototype win.

Only the backbone is kept after training: the metric compares [CLS] embeddings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import lightning as L
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from transformers import ViTModel

from lightning_modules.core.losses import check_finite
from lightning_modules.core.optim import adam, cosine_schedule
from lightning_modules.diffusion.multicrop import MultiCrop


@dataclass(frozen=True)
class DinoSettings:
    steps: int                    # optimizer steps of the run: the schedules end there
    lr: float
    weight_decay: float
    warmup_steps: int             # linear learning-rate warm-up, then a cosine decay
    out_dim: int                  # K, the number of prototypes
    head_hidden_dim: int
    bottleneck_dim: int
    teacher_temperature: float    # tau_t: sharpening
    student_temperature: float    # tau_s
    momentum: float               # the teacher's EMA momentum at the start (1 at the end)
    center_momentum: float        # m of the centre's EMA


def cls_token(backbone: ViTModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The [CLS] output of the ViT (after its final layer norm): what DINO trains and the
    metric compares. Local views are smaller than the model's image size: the position
    embeddings are interpolated to their grid of patches."""
    resize = pixel_values.shape[-1] != backbone.config.image_size
    return backbone(pixel_values=pixel_values, interpolate_pos_encoding=resize).last_hidden_state[:, 0]


class DinoHead(nn.Module):
    """3-layer MLP -> L2-normalised bottleneck -> weight-normalised layer of K prototypes.

    The last layer's weight norm has its magnitude fixed at 1 (DINO's `norm_last_layer`), so a
    logit is the cosine between the bottleneck feature and a prototype. The MLP normalises by
    the batch (DINO's `use_bn_in_head`, its choice for convnets): a freshly initialised tiny
    ViT gives nearly the same [CLS] for every image, and without batch norm the teacher's first
    targets barely differ between images, so centring flattens them and training collapses to
    the uniform output (it did, in every short run with background swaps)."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        bottleneck = F.normalize(self.mlp(features), dim=-1)
        return bottleneck @ F.normalize(self.prototypes, dim=-1).T


class DinoNetwork(nn.Module):
    """Backbone + head over a list of views of one batch -> V x B x K logits. Views of one size
    go through the backbone together (one forward for the globals, one for the locals)."""

    def __init__(self, backbone: ViTModel, head: DinoHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        batch, outputs, start = views[0].shape[0], [], 0
        while start < len(views):
            end = start + 1
            while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
                end += 1
            logits = self.head(cls_token(self.backbone, torch.cat(views[start:end])))
            outputs.append(logits.view(end - start, batch, -1))
            start = end
        return torch.cat(outputs)


def dino_loss(student_output: torch.Tensor, teacher_output: torch.Tensor, center: torch.Tensor,
              student_temperature: float, teacher_temperature: float) -> torch.Tensor:
    """Mean cross-entropy H(P_t(view a), P_s(view b)) over all pairs of different views.

    student_output: V x B x K logits of all views, the global ones first (in the teacher's
    order); teacher_output: G x B x K logits of the G global views; center: K."""
    targets = F.softmax((teacher_output - center) / teacher_temperature, dim=-1)
    log_predictions = F.log_softmax(student_output / student_temperature, dim=-1)
    cross_entropy = -torch.einsum("tbk,sbk->tsb", targets, log_predictions).mean(-1)   # G x V
    same_view = torch.eye(*cross_entropy.shape, dtype=torch.bool, device=cross_entropy.device)
    return cross_entropy[~same_view].mean()


def teacher_momentum(step: int, steps: int, base: float) -> float:
    """The EMA momentum at optimizer step `step` of `steps`: base at 0, rising on a cosine to 1
    at the end (the teacher settles as the student does)."""
    progress = min(step / max(steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class DinoLoss(NamedTuple):
    loss: torch.Tensor
    teacher_output: torch.Tensor   # G x B x K, what the centre follows


class DinoPretrainer(L.LightningModule):
    def __init__(self, backbone: ViTModel, crops: MultiCrop, settings: DinoSettings):
        super().__init__()
        if getattr(backbone, "pooler", None) is not None:
            # DINO and the metric read [CLS]; an untrained pooler would also leave DDP waiting
            # for gradients that never come.
            backbone.pooler.requires_grad_(False)
        head = DinoHead(backbone.config.hidden_size, settings.head_hidden_dim, settings.bottleneck_dim,
                        settings.out_dim)
        self.student = DinoNetwork(backbone, head)
        self.teacher = copy.deepcopy(self.student)   # the same start (DINO initialises both alike)
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(settings.out_dim))
        self.crops, self.settings = crops, settings

    def on_fit_start(self) -> None:
        # The teacher too: its head normalises by the batch's statistics, as the student's does.
        self.student.train()
        self.teacher.train()

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> DinoLoss:
        views = self.crops(batch["pixels"], batch.get("mask"))
        with torch.no_grad():
            teacher_output = self.teacher(views.teacher)
        student_output = self.student(views.student)
        loss = dino_loss(student_output, teacher_output, self.center, self.settings.student_temperature,
                         self.settings.teacher_temperature)
        return DinoLoss(loss, teacher_output)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, teacher_output = self.compute_loss(batch)
        check_finite(loss, "DINO loss", self.global_step)
        # The teacher's entropy watches for collapse: log K is a uniform (centring won),
        # 0 is one prototype for every image (sharpening won).
        targets = F.softmax((teacher_output - self.center) / self.settings.teacher_temperature, dim=-1)
        entropy = -(targets * torch.log(targets.clamp_min(1e-12))).sum(-1).mean()
        self.update_center(teacher_output)
        self.log("train/teacher_entropy", entropy, on_step=True, on_epoch=False)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """c <- m c + (1 - m) mean of the teacher's logits over the batch (of every rank)."""
        batch_center = teacher_output.mean(dim=(0, 1))
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center /= dist.get_world_size()
        momentum = self.settings.center_momentum
        self.center.mul_(momentum).add_(batch_center, alpha=1 - momentum)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """theta_t <- momentum theta_t + (1 - momentum) theta_s."""
        for teacher, student in zip(self.teacher.parameters(), self.student.parameters()):
            teacher.mul_(momentum).add_(student.detach(), alpha=1 - momentum)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Here, inside the step, rather than in on_train_batch_end: the callbacks that save
        # checkpoints run before the module's batch-end hook, and a resumed run must find
        # the teacher of the step the checkpoint closed. global_step counts this update.
        self.update_teacher(teacher_momentum(self.global_step, self.settings.steps, self.settings.momentum))

    def configure_optimizers(self):
        # No weight decay on biases and norm gains (DINO's split).
        params = [p for p in self.student.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.settings.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        return cosine_schedule(self, adam(groups, lr=self.settings.lr), self.settings.warmup_steps)
