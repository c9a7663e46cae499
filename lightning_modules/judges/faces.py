"""SynthWorld's face judge: what a face shows (hair style and color, glasses, beard, mouth) and
whose face it is, from one trunk with one linear head per attribute and one for the identity.

It is trained on real SynthWorld faces only, so that what it says about an edited face measures
the edit (did "curly hair" make the hair curly, and did the person stay the same person?), not
its taste for generated images. Its embedding, the globally pooled trunk features the heads read
(8 x width), is also the faces' FID feature extractor: a space where identity and every
attribute are linearly separable, which is what FID should compare on faces.

Inputs are RGB in [0, 1] of any size: they are resized to the judge's `image_size` with the
antialiased filter its training faces went through (`resize_to`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.core.losses import check_finite
from lightning_modules.core.optim import adam
from lightning_modules.core.saved import SavedNetwork
from lightning_modules.judges.module import light_augmentation
from lightning_modules.judges.network import MIN_IMAGE_SIZE, resize_to, vgg_blocks

IDENTITY = "identity"   # the name of the identity head beside the attributes'


class MaxAndMeanPool(nn.Module):
    """Global max and mean of each channel, side by side: B x C x H x W -> B x 2C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


class FaceAttributeClassifier(SavedNetwork, nn.Module):
    """The judges' VGG-style trunk (lightning_modules/judges/network.py), pooled globally by both
    the maximum and the mean, with one linear head per attribute plus the identity head.

    Measured on the default profile's faces (tasks/judges/train_face_attributes.py): the mean
    alone left the mouth at 0.54 test accuracy (a smile is a few pixels of a 64 px face, and the
    mean over the face dilutes them), the maximum and the mean side by side reach 0.92 in the
    same epochs, and keep what the mean gives the identity (skin tone, face shape: the whole face).
    """

    def __init__(self, attributes: Mapping[str, Sequence[str]], identities: Sequence[int], image_size: int = 64,
                 width: int = 32):
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size {image_size} is below {MIN_IMAGE_SIZE}")
        if not attributes or IDENTITY in attributes or any(len(v) < 2 for v in attributes.values()):
            raise ValueError(f"attributes: expected names (not {IDENTITY!r}) with at least two values each")
        if not identities:
            raise ValueError("the judge needs at least one identity")
        self.config = {"attributes": {name: list(values) for name, values in attributes.items()},
                       "identities": [int(i) for i in identities], "image_size": int(image_size),
                       "width": int(width)}
        self.trunk = nn.Sequential(*vgg_blocks(width), MaxAndMeanPool())
        dim = self.embedding_dim
        self.heads = nn.ModuleDict({name: nn.Linear(dim, len(values)) for name, values in attributes.items()})
        self.heads[IDENTITY] = nn.Linear(dim, len(identities))
        self.register_buffer("identity_ids", torch.tensor(self.config["identities"]), persistent=False)

    @property
    def attributes(self) -> dict[str, list[str]]:
        return self.config["attributes"]

    @property
    def identities(self) -> list[int]:
        return self.config["identities"]

    @property
    def head_names(self) -> list[str]:
        """The attributes in their vocabulary order, then "identity": the order of the targets."""
        return [*self.attributes, IDENTITY]

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    @property
    def embedding_dim(self) -> int:
        return 8 * self.config["width"]   # the trunk's 4 x width channels, by max and by mean

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head of images already at `image_size`, RGB in [0, 1]."""
        features = self.trunk(images * 2.0 - 1.0)
        return {name: head(features) for name, head in self.heads.items()}

    def _sized(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected B x 3 x H x W images, got shape {tuple(images.shape)}")
        return resize_to(images, self.image_size)

    def logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> B x values logits (identity: B x identities) of images of any size in [0, 1]."""
        return self(self._sized(images))

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> LongTensor [B]: the index of the value in `attributes[name]`; for "identity",
        the identity itself (as numbered in faces.csv)."""
        predicted = {name: logits.argmax(1) for name, logits in self.logits(images).items()}
        predicted[IDENTITY] = self.identity_ids[predicted[IDENTITY]]
        return predicted

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """B x embedding_dim: the pooled trunk features the heads read (the FID feature)."""
        return self.trunk(self._sized(images) * 2.0 - 1.0)

    @classmethod
    def from_pretrained(cls, directory: Path) -> "FaceAttributeClassifier":
        return super().from_pretrained(directory).eval()   # a judge: never in training mode


Batch = tuple[torch.Tensor, torch.Tensor]   # images, targets B x heads (FaceAttributeClassifier.head_names)


class FaceAttributeJudge(L.LightningModule):
    def __init__(self, net: FaceAttributeClassifier, lr: float = 2e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 1, identity_weight: float = 1.0, augment: bool = True):
        super().__init__()
        self.net, self.lr, self.weight_decay, self.max_epochs = net, lr, weight_decay, max_epochs
        self.identity_weight, self.augment = identity_weight, augment
        heads = len(net.head_names)
        self._val_hits, self._val_count = torch.zeros(heads, dtype=torch.long), torch.zeros((), dtype=torch.long)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The sum of the heads' cross-entropies (the identity's weighed by `identity_weight`);
        the terms apart for logging."""
        images, targets = batch
        return self._loss(self(images), targets)

    def _loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        terms = {f"{name}_loss": F.cross_entropy(logits[name], targets[:, i])
                 for i, name in enumerate(self.net.head_names)}
        weights = {f"{IDENTITY}_loss": self.identity_weight}
        return sum(weights.get(name, 1.0) * term for name, term in terms.items()), terms

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.augment:
            # A mirror image only. The faces are aligned (a shift is no nuisance the judge meets,
            # and it cost the small mouth 0.08 test accuracy) and their exposure already varies,
            # while skin tone is part of who a person is: with the class judge's shifts and
            # brightness changes, identity test accuracy was 0.06 after 8 epochs; 0.20 with flips.
            images = light_augmentation(images, max_shift=0.0, brightness=0.0)
        loss, terms = self.compute_loss((images, targets))
        loss = check_finite(loss, "train_face_attributes loss", self.global_step)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=images.shape[0])
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=images.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_hits = torch.zeros(len(self.net.head_names), dtype=torch.long, device=self.device)
        self._val_count = torch.zeros((), dtype=torch.long, device=self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        loss, _ = self._loss(logits, targets)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=images.shape[0])
        predicted = torch.stack([logits[name].argmax(1) for name in self.net.head_names], dim=1)
        self._val_hits += (predicted == targets).sum(0)
        self._val_count += targets.shape[0]

    def on_validation_epoch_end(self) -> None:
        hits = self.trainer.strategy.reduce(self._val_hits, reduce_op="sum")
        count = self.trainer.strategy.reduce(self._val_count, reduce_op="sum")
        if int(count) == 0:
            return
        for name, value in zip(self.net.head_names, (hits.float() / count).tolist()):
            self.log(f"val/{name}_accuracy", value, prog_bar=name == IDENTITY, sync_dist=False)

    def configure_optimizers(self):
        optimizer = adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # Cosine decay per epoch: it needs no count of steps (see ClassSceneJudge).
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, self.max_epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


@torch.no_grad()
def evaluate_face_judge(net: FaceAttributeClassifier, loader, device: torch.device | str = "cpu") -> dict:
    """Accuracy of each head over a loader of (images, targets), and the recall of each value of
    each attribute (which values the judge confuses)."""
    was_training = net.training
    net = net.to(device).eval()
    names = net.head_names
    hits = torch.zeros(len(names), dtype=torch.long)
    confusions = {name: torch.zeros(len(values), len(values), dtype=torch.long)
                  for name, values in net.attributes.items()}
    count = 0
    for images, targets in loader:
        logits = net(images.to(device))
        predicted = torch.stack([logits[name].argmax(1).cpu() for name in names], dim=1)
        hits += (predicted == targets).sum(0)
        for i, name in enumerate(net.attributes):
            index = targets[:, i] * len(net.attributes[name]) + predicted[:, i]
            confusions[name] += torch.bincount(index, minlength=confusions[name].numel()).view_as(confusions[name])
        count += targets.shape[0]
    net.train(was_training)  # Lightning keeps the mode it finds: leave it as it was

    def recall(confusion: torch.Tensor, values: list[str]) -> dict[str, Optional[float]]:
        seen = confusion.sum(1)
        return {v: (round(float(confusion[i, i] / seen[i]), 4) if seen[i] else None) for i, v in enumerate(values)}

    accuracy = {name: (round(float(hits[i]) / count, 4) if count else None) for i, name in enumerate(names)}
    return {**accuracy, "images": count,
            "per_value": {name: recall(confusions[name], values) for name, values in net.attributes.items()}}
