"""Lightning training of DeSKPro: the face teacher first, then the global + student streams."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import lightning as L
import torch

from lightning_modules.deskpro.losses import (
    IdentityLosses,
    LossTerms,
    facial_knowledge_propagation_loss,
    mask_guided_attention_loss,
)
from lightning_modules.deskpro.streams import ReidStream
from lightning_modules.core.losses import check_finite
from lightning_modules.core.optim import adam, cosine_schedule


@dataclass(frozen=True)
class Optimization:
    lr: float = 6e-4
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    triplet_margin: float = 0.3


def _adam_with_cosine(module: L.LightningModule, opt: Optimization):
    """Adam (L2 weight decay, as torchreid's) with a per-step cosine decay to 0 over the run."""
    parameters = [p for p in module.parameters() if p.requires_grad]
    return cosine_schedule(module, adam(parameters, decoupled_weight_decay=False, lr=opt.lr,
                                        weight_decay=opt.weight_decay))


class FaceTeacherModule(L.LightningModule):
    """phi_t: the face stream on restored faces, CE over I^t + triplet over R^t."""

    def __init__(self, teacher: ReidStream, num_classes: int, opt: Optimization = Optimization()):
        super().__init__()
        self.teacher = teacher
        self.opt = opt
        self.losses = IdentityLosses(num_classes, opt.label_smoothing, opt.triplet_margin)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_ce(I^t) + L_trip(R^t) on the restored faces, and its two terms by name."""
        labels = batch["label"]
        out = self.teacher(batch["restored_face"]).mbn
        terms = {"ce": self.losses.ce(out.logits, labels), "triplet": self.losses.trip(out.triplet_features, labels)}
        return terms["ce"] + terms["triplet"], terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return _checked_and_logged(self, batch, "train_reid_teacher loss")

    def configure_optimizers(self):
        return _adam_with_cosine(self, self.opt)


def _checked_and_logged(module: L.LightningModule, batch: dict[str, torch.Tensor], what: str) -> torch.Tensor:
    """A training step of either module: its `compute_loss`, the finite check, the curves."""
    loss, terms = module.compute_loss(batch)
    loss = check_finite(loss, what, module.global_step)
    n = batch["label"].shape[0]
    module.log_dict({f"train/{name}": value for name, value in terms.items()}, on_step=True, batch_size=n)
    module.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
    return loss


@dataclass(frozen=True)
class DeSKProWeights:
    """The constants of eq. 3-7 (section 3.1)."""

    cloth_mask_epsilon: float = 0.1   # epsilon, eq. 3
    attention_loss_weight: float = 7.0  # lambda, eq. 7
    temperature: float = 5.0          # tau, eq. 5
    alpha: float = 0.7                # eq. 7: share of L_fkp against the student's own CE


class DeSKProModule(L.LightningModule):
    """Eq. 7 over whichever streams the variant has.

    The teacher is frozen (eval mode, no gradients): it only supplies soft labels I^t.
    Faces: only images with a detected face enter the face-stream terms.
    """

    def __init__(self, num_classes: int, global_stream: Optional[ReidStream], student: Optional[ReidStream],
                 teacher: Optional[ReidStream], weights: DeSKProWeights, attention_loss: bool,
                 opt: Optimization = Optimization()):
        super().__init__()
        if student is not None and weights.alpha > 0 and teacher is None:
            raise ValueError("knowledge propagation (alpha > 0) needs the trained teacher")
        self.global_stream = global_stream
        self.student = student
        self.teacher = teacher
        if teacher is not None:
            teacher.requires_grad_(False)
        self.weights = weights
        self.attention_loss = attention_loss
        self.opt = opt
        self.losses = IdentityLosses(num_classes, opt.label_smoothing, opt.triplet_margin)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: its batch-norm statistics must not drift either
        return self

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        labels = batch["label"]
        zero = batch["image"].new_zeros(())
        terms = LossTerms(zero, zero, zero, zero, zero)
        if self.global_stream is not None:
            out = self.global_stream(batch["image"])
            terms.ce_global = self.losses.ce(out.mbn.logits, labels)
            terms.triplet = terms.triplet + self.losses.trip(out.mbn.triplet_features, labels)
            parsed = batch["has_parsing"]
            if self.attention_loss and out.attention is not None and parsed.any():
                terms.attention = mask_guided_attention_loss(out.attention[parsed], batch["cloth_mask"][parsed],
                                                             self.weights.cloth_mask_epsilon)
        has_face = batch["has_face"]
        # Batch norm needs two samples; a P x K batch without two faces has no face terms.
        if self.student is not None and int(has_face.sum()) >= 2:
            face_labels = labels[has_face]
            student = self.student(batch["face"][has_face]).mbn
            terms.ce_student = self.losses.ce(student.logits, face_labels)
            terms.triplet = terms.triplet + self.losses.trip(student.triplet_features, face_labels)
            if self.teacher is not None and self.weights.alpha > 0:
                with torch.no_grad():
                    teacher = self.teacher(batch["restored_face"][has_face]).mbn
                terms.fkp = facial_knowledge_propagation_loss(teacher.logits, student.logits,
                                                              self.weights.temperature)
        return terms

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L of eq. 7 and its terms by name (a term the variant lacks is zero)."""
        terms = self.loss_terms(batch)
        # Without a teacher there is no L_fkp: the student's own CE takes its whole share.
        alpha = self.weights.alpha if self.teacher is not None else 0.0
        return terms.total(self.weights.attention_loss_weight, alpha), dict(vars(terms))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return _checked_and_logged(self, batch, "train_reid loss")

    def configure_optimizers(self):
        return _adam_with_cosine(self, self.opt)
