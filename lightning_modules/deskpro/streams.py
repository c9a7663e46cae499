"""One re-ID stream: truncated OSNet -> (optional) CSA -> Multi-Branch Network.

The global (body) stream of DeSKPro uses CSA; the face teacher and student are the same
architecture without it (the paper feeds faces "to the truncated OSNet and the MBN").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lightning_modules.deskpro.backbone import build_osnet, split_osnet, stream_channels
from lightning_modules.deskpro.mbn import MBNOutput, MultiBranchNetwork

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# torchreid's OSNet weights were trained on ImageNet-normalised inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClothIrrelevantSpatialAttention(nn.Module):
    """CSA (eq. 1): a point-wise convolution and a sigmoid give one score per position of F."""

    def __init__(self, channels: int):
        super().__init__()
        self.pointwise = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.pointwise(feature_map))


@dataclass
class StreamOutput:
    mbn: MBNOutput
    feature_map: torch.Tensor            # F
    attended: torch.Tensor               # F_att = F * Psi (eq. 2); F itself without CSA
    attention: Optional[torch.Tensor]    # Psi_hat, (B, 1, h_f, w_f); None without CSA


class ReidStream(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "osnet_x0_25", embedding_dim: int = 128,
                 csa: bool = False, backbone_weights: Optional[Path] = None):
        super().__init__()
        self.config = {"num_classes": num_classes, "backbone": backbone, "embedding_dim": embedding_dim,
                       "csa": csa}
        self.stem, tail = split_osnet(build_osnet(backbone, backbone_weights))
        feature_channels, tail_channels = stream_channels(self.stem, tail)
        self.csa = ClothIrrelevantSpatialAttention(feature_channels) if csa else None
        self.mbn = MultiBranchNetwork(tail, tail_channels, num_classes, embedding_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def embedding_size(self) -> int:
        return self.config["embedding_dim"] * 7

    def forward(self, images: torch.Tensor) -> StreamOutput:
        """images: (B, 3, H, W) in [0, 1]."""
        feature_map = self.stem((images - self.mean) / self.std)
        attention = self.csa(feature_map) if self.csa is not None else None
        attended = feature_map * attention if attention is not None else feature_map
        return StreamOutput(self.mbn(attended), feature_map, attended, attention)

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(directory / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, directory: Path) -> "ReidStream":
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: missing (not a saved re-ID stream)")
        stream = cls(**json.loads((directory / CONFIG_FILE).read_text()))
        stream.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return stream
