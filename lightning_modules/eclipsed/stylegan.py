"""A StyleGAN2 generator whose every layer's style is addressable (W+), with its feature maps.

The mapping network (pixel norm, `n_mlp` equalized linear layers at a 100x smaller learning
rate) turns z into w; the synthesis network starts from a learned 4x4 constant and doubles the
resolution per block (an upsampling modulated conv, a modulated conv, a ToRGB added to the
upsampled RGB of the block below). Each modulated conv and ToRGB reads one row of the
per-layer styles `ws` [B, num_ws, w_dim] (W+); w repeated on every row is W.

Style index i drives (rosinality's order, which is StyleGAN2's):
  0                     the 4x4 conv
  odd i = 2j + 1        the ToRGB of resolution 2^(j+2) and the upsampling conv to 2^(j+3)
  even i = 2j + 2       the second conv at 2^(j+3)
  num_ws - 1            the last ToRGB alone
`synthesis(..., return_features=True)` gives features[i] = the activation of the conv index i
drives (the final RGB for the last index), which is what LELSD's localization loss reads.

The per-resolution channels are explicit (`channels`, e.g. {4: 512, ..., 1024: 32} for FFHQ
at 1024 px, or {4: 128, ..., 64: 16} for a model a CPU trains in minutes): one class serves
both, and a rosinality checkpoint of either loads with strict=True (rosinality.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lightning_modules.core.saved import CONFIG_NAME, WEIGHTS_NAME
from lightning_modules.eclipsed.layers import (
    DEFAULT_BLUR,
    ConstantInput,
    EqualLinear,
    PixelNorm,
    StyledConv,
    ToRGB,
)

Noise = Union[None, str, Sequence[Optional[torch.Tensor]]]
MAPPING_LR_MUL = 0.01   # StyleGAN's: the mapping network learns 100x slower


def channel_table(channels: Mapping[Union[int, str], int]) -> dict[int, int]:
    """{resolution: channels} with int keys (JSON gives strings), checked: 4, 8, ..., size."""
    table = {int(res): int(ch) for res, ch in channels.items()}
    expected = [2 ** i for i in range(2, 2 + len(table))]
    if sorted(table) != expected or len(table) < 2:
        raise ValueError(f"channels: expected the resolutions 4, 8, 16, ... up to the image size (at least 4 and 8), "
                         f"got {sorted(table)}")
    if min(table.values()) < 1:
        raise ValueError("channels: every resolution needs at least one channel")
    return table


class StyleGenerator(nn.Module):
    def __init__(self, channels: Mapping[Union[int, str], int], style_dim: int = 512, n_mlp: int = 8,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR, lr_mlp: float = MAPPING_LR_MUL):
        super().__init__()
        self.channels = channel_table(channels)
        self.size = max(self.channels)
        self.log_size = int(math.log2(self.size))
        self.style_dim = self.w_dim = style_dim
        self.config = {"channels": {str(r): c for r, c in self.channels.items()}, "style_dim": style_dim,
                       "n_mlp": n_mlp, "blur_kernel": list(blur_kernel), "lr_mlp": lr_mlp}

        self.style = nn.Sequential(PixelNorm(), *(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp,
                                                              activation="fused_lrelu") for _ in range(n_mlp)))
        base = self.channels[4]
        self.input = ConstantInput(base)
        self.conv1 = StyledConv(base, base, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(base, style_dim, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_channels = base
        for i in range(3, self.log_size + 1):
            out_channels = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channels, out_channels, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel))
            in_channels = out_channels
        self.num_layers = 2 * (self.log_size - 2) + 1     # noise inputs: one per StyledConv
        self.num_ws = 2 * self.log_size - 2
        # Fixed noise for "const" synthesis (buffers: they travel with the weights)
        self.noises = nn.Module()
        for layer in range(self.num_layers):
            side = 2 ** ((layer + 5) // 2)
            self.noises.register_buffer(f"noise_{layer}", torch.randn(1, 1, side, side))
        # The mean w, the centre of the truncation trick (not part of rosinality's g_ema dict)
        self.register_buffer("latent_avg", torch.zeros(style_dim))

    # --- z -> w -------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """z [B, z_dim] -> w [B, w_dim] (truncated towards `latent_avg` when truncation < 1)."""
        return self.truncate(self.style(z), truncation)

    def truncate(self, w: torch.Tensor, truncation: float) -> torch.Tensor:
        """The truncation trick: w pulled towards the mean w (psi = 1 leaves it as it is)."""
        if truncation == 1.0:
            return w
        avg = self.latent_avg.view(*([1] * (w.ndim - 1)), -1)
        return avg + truncation * (w - avg)

    @torch.no_grad()
    def mean_latent(self, samples: int = 4096, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        z = torch.randn(samples, self.style_dim, generator=generator).to(self.latent_avg)
        return self.style(z).mean(0)

    @torch.no_grad()
    def update_latent_avg(self, samples: int = 4096, generator: Optional[torch.Generator] = None) -> None:
        self.latent_avg.copy_(self.mean_latent(samples, generator))

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """w [B, w_dim] -> ws [B, num_ws, w_dim]: the same style on every layer (W in W+)."""
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    # --- ws -> image --------------------------------------------------------------------
    def _noise_list(self, noise: Noise) -> list[Optional[torch.Tensor]]:
        if noise is None:
            return [None] * self.num_layers
        if isinstance(noise, str):
            if noise != "const":
                raise ValueError(f"noise: expected None (random), 'const' or a list of tensors, got {noise!r}")
            return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"noise: expected {self.num_layers} noise maps, got {len(noise)}")
        return noise

    def synthesis(self, ws: torch.Tensor, noise: Noise = None, return_features: bool = False):
        """ws [B, num_ws, w_dim] -> images [B, 3, size, size] in about [-1, 1]; with
        return_features, also the list of num_ws feature maps (see the module docstring)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws: expected [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        noises = self._noise_list(noise)
        features: list[torch.Tensor] = []
        out = self.conv1(self.input(ws.shape[0]), ws[:, 0], noises[0])
        features.append(out)
        skip = self.to_rgb1(out, ws[:, 1])
        i = 1
        for block in range(len(self.to_rgbs)):
            up, conv = self.convs[2 * block], self.convs[2 * block + 1]
            out = up(out, ws[:, i], noises[2 * block + 1])
            features.append(out)
            out = conv(out, ws[:, i + 1], noises[2 * block + 2])
            features.append(out)
            skip = self.to_rgbs[block](out, ws[:, i + 2], skip)
            i += 2
        features.append(skip)
        return (skip, features) if return_features else skip

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noise: Noise = None, return_features: bool = False):
        """z -> w -> images: mapping, then synthesis with w on every layer."""
        return self.synthesis(self.broadcast(self.mapping(z, truncation)), noise, return_features)

    # --- saving -------------------------------------------------------------------------
    def save_pretrained(self, directory: Path) -> None:
        """config.json + model.safetensors (rosinality's g_ema keys, plus `latent_avg`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps({"architecture": "stylegan2", **self.config,
                                                         "size": self.size, "num_ws": self.num_ws}, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))

    @classmethod
    def from_config(cls, config: Mapping) -> "StyleGenerator":
        return cls(**{k: v for k, v in config.items() if k in ("channels", "style_dim", "n_mlp", "blur_kernel",
                                                                  "lr_mlp")})

    @classmethod
    def from_pretrained(cls, directory: Path) -> "StyleGenerator":
        directory = Path(directory)
        model = cls.from_config(json.loads((directory / CONFIG_NAME).read_text()))
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model
