"""Training of the prompt-accuracy judge: cross-entropy of the class head plus that of the scene head."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F

from lightning_modules.core.losses import check_finite
from lightning_modules.core.metrics import PromptAccuracy, confusion_matrix
from lightning_modules.judges.data import NO_SCENE
from lightning_modules.judges.network import ClassSceneClassifier
from lightning_modules.core.optim import adam

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]   # images, class targets, scene targets


def light_augmentation(images: torch.Tensor, max_shift: float = 1 / 16, brightness: float = 0.1,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random horizontal flip, a shift of up to `max_shift` of the size and a brightness change of
    up to +-`brightness`, per image. What a render shows (its class, its scene) survives each of
    them; the judge learns not to read the subject's exact place or the renderer's exact colors.

    Drawn from torch's global generator unless one is given: the Trainer seeds it per step
    (tasks/core/trainer.py StopSafely), so a resumed run draws what the uninterrupted one did."""
    n = images.shape[0]

    def draw(*shape: int) -> torch.Tensor:   # uniform in [0, 1), on the CPU generator, then moved
        return torch.rand(*shape, generator=generator).to(images.device)

    flip = torch.where(draw(n) < 0.5, -1.0, 1.0)
    shift = (draw(n, 2) * 2 - 1) * max_shift * 2   # affine_grid spans [-1, 1]: a share s of the size is 2s
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = flip, 1.0, shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    scale = 1 + (draw(n, 1, 1, 1) * 2 - 1) * brightness
    return (moved * scale).clamp(0, 1)


class ClassSceneJudge(L.LightningModule):
    def __init__(self, net: ClassSceneClassifier, lr: float = 1e-3, weight_decay: float = 1e-4, max_epochs: int = 1,
                 augment: bool = True):
        super().__init__()
        self.net, self.lr, self.weight_decay, self.max_epochs, self.augment = net, lr, weight_decay, max_epochs, augment
        self.val_accuracy = PromptAccuracy()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(images)

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The class cross-entropy plus the scene cross-entropy (renders whose scene has no caption
        count for the class only); the terms apart for logging."""
        images, class_targets, scene_targets = batch
        return self._loss(*self(images), class_targets, scene_targets)

    @staticmethod
    def _loss(class_logits: torch.Tensor, scene_logits: torch.Tensor, class_targets: torch.Tensor,
              scene_targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        class_loss = F.cross_entropy(class_logits, class_targets)
        if (scene_targets != NO_SCENE).any():
            scene_loss = F.cross_entropy(scene_logits, scene_targets, ignore_index=NO_SCENE)
        else:
            scene_loss = scene_logits.sum() * 0.0   # keeps the graph whole for DDP's gradient sync
        return class_loss + scene_loss, {"class_loss": class_loss, "scene_loss": scene_loss}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, class_targets, scene_targets = batch
        if self.augment:
            images = light_augmentation(images)
        loss, terms = self.compute_loss((images, class_targets, scene_targets))
        loss = check_finite(loss, "train_classifier loss", self.global_step)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0])
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=images.shape[0])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, class_targets, scene_targets = batch
        class_logits, scene_logits = self(images)
        loss, _ = self._loss(class_logits, scene_logits, class_targets, scene_targets)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=images.shape[0])
        self.val_accuracy.update(class_logits, scene_logits, class_targets, scene_targets)

    def on_validation_epoch_end(self) -> None:
        accuracy = self.val_accuracy.compute()   # summed over the ranks by torchmetrics
        self.val_accuracy.reset()
        for name, value in accuracy.items():
            if not torch.isnan(value):
                self.log(f"val/{name}_accuracy", value.float(), prog_bar=name == "both", sync_dist=False)

    def configure_optimizers(self):
        optimizer = adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # Cosine decay over the epochs: stepped per epoch, so it needs no count of steps (which
        # would build the train loader before a resumed checkpoint restores its place).
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


@torch.no_grad()
def evaluate_judge(net: ClassSceneClassifier, loader, device: torch.device | str = "cpu") -> dict:
    """Accuracy of the judge over a loader of (images, class targets, scene targets): class,
    scene and both (PromptAccuracy's definitions), and per class noun and per scene caption."""
    was_training = net.training
    net = net.to(device).eval()
    accuracy = PromptAccuracy().to(device)
    classes, scenes = len(net.class_names), len(net.scene_names)
    class_confusion = torch.zeros(classes, classes, dtype=torch.long)
    scene_confusion = torch.zeros(scenes, scenes, dtype=torch.long)
    count = 0
    for images, class_targets, scene_targets in loader:
        class_logits, scene_logits = net.classify(images.to(device))
        accuracy.update(class_logits, scene_logits, class_targets.to(device), scene_targets.to(device))
        class_confusion += confusion_matrix(class_logits.argmax(1).cpu(), class_targets, classes)
        named = scene_targets != NO_SCENE
        scene_confusion += confusion_matrix(scene_logits.argmax(1).cpu()[named], scene_targets[named], scenes)
        count += images.shape[0]
    net.train(was_training)  # Lightning keeps the mode it finds: leave it as it was

    def recall(confusion: torch.Tensor, names: list[str]) -> dict[str, Optional[float]]:
        seen = confusion.sum(1)
        return {name: (round(float(confusion[i, i] / seen[i]), 4) if seen[i] else None) for i, name in enumerate(names)}

    def rounded(value: torch.Tensor) -> Optional[float]:
        return None if torch.isnan(value) else round(float(value), 4)

    return {**{name: rounded(value) for name, value in accuracy.compute().items()}, "images": count,
            "per_class": recall(class_confusion, net.class_names),
            "per_scene": recall(scene_confusion, net.scene_names)}
