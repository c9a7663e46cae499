"""StyleGAN2's residual discriminator with the minibatch standard deviation layer.

rosinality's key layout (`convs.0.0.weight`, `convs.1.conv1.0.weight`, `final_conv`,
`final_linear`), with the same explicit per-resolution channel table as the generator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lightning_modules.core.saved import CONFIG_NAME, WEIGHTS_NAME
from lightning_modules.eclipsed.layers import DEFAULT_BLUR, ConvLayer, EqualLinear, ResBlock
from lightning_modules.eclipsed.stylegan import channel_table


def stddev_group_size(batch: int, group: int) -> int:
    """The largest group of at most `group` samples that divides the batch (the layer needs whole groups)."""
    group = min(batch, group)
    while batch % group:
        group -= 1
    return group


class Discriminator(nn.Module):
    def __init__(self, channels: Mapping[Union[int, str], int], blur_kernel: Sequence[float] = DEFAULT_BLUR,
                 stddev_group: int = 4):
        super().__init__()
        self.channels = channel_table(channels)
        self.size = max(self.channels)
        self.config = {"channels": {str(r): c for r, c in self.channels.items()}, "blur_kernel": list(blur_kernel),
                       "stddev_group": stddev_group}
        convs: list[nn.Module] = [ConvLayer(3, self.channels[self.size], 1)]   # fromRGB
        in_channels = self.channels[self.size]
        resolution = self.size
        while resolution > 4:
            out_channels = self.channels[resolution // 2]
            convs.append(ResBlock(in_channels, out_channels, blur_kernel))
            in_channels, resolution = out_channels, resolution // 2
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        base = self.channels[4]
        self.final_conv = ConvLayer(in_channels + 1, base, 3)
        self.final_linear = nn.Sequential(EqualLinear(base * 4 * 4, base, activation="fused_lrelu"),
                                          EqualLinear(base, 1))

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """One more channel: the mean standard deviation of the features across a group of
        samples, which lets the discriminator see a generator that gives every sample alike."""
        batch, channels, height, width = x.shape
        group = stddev_group_size(batch, self.stddev_group)
        grouped = x.view(group, -1, channels, height, width)
        std = torch.sqrt(grouped.var(0, unbiased=False) + 1e-8).mean([1, 2, 3])       # [B / group]
        std = std.view(1, -1, 1, 1, 1).expand(group, -1, 1, height, width).reshape(batch, 1, height, width)
        return torch.cat([x, std], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, size, size] in [-1, 1] -> realness logits [B, 1]."""
        out = self.final_conv(self.minibatch_stddev(self.convs(images)))
        return self.final_linear(out.flatten(1))

    def save_pretrained(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, directory: Path) -> "Discriminator":
        directory = Path(directory)
        model = cls(**json.loads((directory / CONFIG_NAME).read_text()))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model
