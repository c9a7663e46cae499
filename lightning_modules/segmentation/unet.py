"""The subject-aware segmentation network of MSP A.4: a U-Net on a ResNet-34 encoder.

`encode` exposes the encoder's feature pyramid (strides 2..32); the subject-aware
similarity (SAS) metric and the SAL guidance read the same features. Inputs are RGB in
[0, 1]; ImageNet normalization happens inside, so callers never have to remember it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torchvision.models import resnet34

from lightning_modules.core.saved import SavedNetwork

ENCODER_CHANNELS = (64, 64, 128, 256, 512)  # conv1, layer1..layer4 of ResNet-34


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor]) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.block(x)


class ResNet34UNet(SavedNetwork, nn.Module):
    def __init__(self, num_classes: int, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 class_names: Optional[Sequence[str]] = None, image_size: Optional[int] = None):
        super().__init__()
        self.config = {
            "num_classes": num_classes,
            "decoder_channels": list(decoder_channels),
            "class_names": list(class_names) if class_names else [str(i) for i in range(num_classes)],
            # the side it was trained at: what a judge resizes other images to (None: unknown)
            "image_size": image_size,
        }
        backbone = resnet34(weights=None)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu)
        self.pool = backbone.maxpool
        self.layers = nn.ModuleList([backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4])
        skips = list(ENCODER_CHANNELS[:-1][::-1]) + [0]  # 256, 128, 64, 64, then none at full res
        blocks, channels = [], ENCODER_CHANNELS[-1]
        for skip, out in zip(skips, decoder_channels):
            blocks.append(DecoderBlock(channels, skip, out))
            channels = out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @property
    def class_names(self) -> list[str]:
        return self.config["class_names"]

    @property
    def image_size(self) -> Optional[int]:
        return self.config.get("image_size")

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features at strides 2, 4, 8, 16, 32 for RGB images in [0, 1]."""
        x = self.stem((images - self.mean) / self.std)
        features = [x]
        x = self.pool(x)
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel class logits (B x C x H x W); H and W must be multiples of 32."""
        features = self.encode(images)
        x = features[-1]
        skips = features[:-1][::-1] + [None]
        for block, skip in zip(self.decoder, skips):
            x = block(x, skip)
        return self.head(x)

    def load_encoder_weights(self, path: Path) -> None:
        """Load torchvision resnet34 weights (safetensors, or a state dict loaded weights-only)."""
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True)
        parts = {"conv1": self.stem[0], "bn1": self.stem[1], "layer1": self.layers[0],
                 "layer2": self.layers[1], "layer3": self.layers[2], "layer4": self.layers[3]}
        for prefix, module in parts.items():
            sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
            if not sub:
                raise KeyError(f"{path}: no '{prefix}.*' tensors; expected torchvision resnet34 weights")
            module.load_state_dict(sub)
