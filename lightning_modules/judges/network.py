"""SynthWorld's prompt-accuracy judge: a small CNN that names the class and the scene of an image.

It is trained on real renders only (never on generated images), so that what it says about a
generated "a dog on a beach" measures the generator, not the judge's own taste for generated
pictures. Two heads share one trunk: the class noun of the subject ("dog") and the scene
caption ("on a beach").

The judge sees every image at its own size (`image_size`): `classify` resizes whatever it is
given (a 32 px or 64 px generation, a 96 px render) with the same antialiased filter the
training data went through, so a judge trained at 32 px reads a 512 px Stable Diffusion image
too. Inputs are RGB in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.core.saved import SavedNetwork

# Three 2x poolings before the global pooling: below 16 px the last blocks see 2 x 2 maps.
MIN_IMAGE_SIZE = 16


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """N x 3 x H x W in [0, 1] -> N x 3 x size x size. Antialiased, so that downscaling a large
    render keeps what a small generation of the same scene shows instead of aliasing it."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def vgg_blocks(width: int) -> list[nn.Module]:
    """The judges' convolutional trunk up to its global pooling: conv-BN-ReLU blocks and three 2x
    poolings, ending in 4 x `width` channels at 1/8 of the input's side."""
    half = max(1, width // 2)
    return [
        _block(3, half), nn.MaxPool2d(2),
        _block(half, width), _block(width, width), nn.MaxPool2d(2),
        _block(width, 2 * width), _block(2 * width, 2 * width), nn.MaxPool2d(2),
        _block(2 * width, 4 * width),
    ]


class ClassSceneClassifier(SavedNetwork, nn.Module):
    """A VGG-style trunk (conv-BN-ReLU blocks, three poolings) with a global max pooling and two
    linear heads.

    Measured on the default profile's renders (tasks/judges/train_classifier.py): the full
    resolution gets one thin block only (half the width), where a wide one costs most of the
    time and adds nothing; the max pooling keeps a small subject's strongest evidence, which an
    average over a mostly-background canvas dilutes.
    """

    def __init__(self, class_names: Sequence[str], scene_names: Sequence[str], image_size: int = 32,
                 width: int = 32):
        super().__init__()
        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size {image_size} is below {MIN_IMAGE_SIZE}")
        if not class_names or not scene_names:
            raise ValueError("the judge needs at least one class and one scene")
        self.config = {"class_names": list(class_names), "scene_names": list(scene_names),
                       "image_size": int(image_size), "width": int(width)}
        self.trunk = nn.Sequential(*vgg_blocks(width), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.class_head = nn.Linear(4 * width, len(class_names))
        self.scene_head = nn.Linear(4 * width, len(scene_names))

    @property
    def class_names(self) -> list[str]:
        return self.config["class_names"]

    @property
    def scene_names(self) -> list[str]:
        return self.config["scene_names"]

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits, scene logits) of images already at `image_size`, RGB in [0, 1]."""
        features = self.trunk(images * 2.0 - 1.0)
        return self.class_head(features), self.scene_head(features)

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits N x classes, scene logits N x scenes) of N x 3 x H x W images in [0, 1]
        of any size: they are resized to the judge's own size first."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W images, got shape {tuple(images.shape)}")
        return self(resize_to(images, self.image_size))

    @classmethod
    def from_pretrained(cls, directory: Path) -> "ClassSceneClassifier":
        return super().from_pretrained(directory).eval()   # a judge: never in training mode
