"""The layers of a StyleGAN2 generator and discriminator, in plain PyTorch (no custom CUDA ops).

Karras et al. 2020 ("Analyzing and Improving the Image Quality of StyleGAN"). The module
names, parameter names and buffers follow the layout of rosinality's stylegan2-pytorch, the
most used PyTorch port, so that its checkpoints load with `strict=True`
(lightning_modules/eclipsed/rosinality.py): an `EqualLinear` keeps `weight` and `bias`, a
`Blur` its `kernel` buffer, a `StyledConv` its `conv`, `noise` and `activate`, and so on.

Equalized learning rate: every weight is stored at unit variance and scaled by its He
constant at run time, so that Adam's per-parameter steps move every layer alike.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
LEAKY_SLOPE = 0.2
DEFAULT_BLUR = (1, 3, 3, 1)   # the binomial filter of StyleGAN2's resampling


def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """A separable 2-D FIR filter from its 1-D taps, normalised to sum 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative pads crop), filter, downsample: the resampling
    primitive of StyleGAN2, written with reshapes and a depthwise conv2d instead of a CUDA op."""
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    # upfirdn2d convolves (the kernel flipped), conv2d correlates
    weight = torch.flip(kernel, [0, 1]).to(x)[None, None].expand(channels, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=channels)
    return x[:, :, ::down, ::down] if down > 1 else x


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Bias, leaky ReLU (0.2), then x sqrt(2) to keep the signal's magnitude (StyleGAN's gain)."""
    shape = (1, bias.shape[0]) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), LEAKY_SLOPE) * SQRT2


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class PixelNorm(nn.Module):
    """z normalised to the unit sphere (times sqrt(dim)) before the mapping network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        # after an upsampling the zeros dilute the signal by factor^2: the filter restores it
        self.register_buffer("kernel", make_kernel(taps) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 upsampling of the RGB skip path (zero insertion + the binomial filter)."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * factor ** 2)
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualLinear(nn.Module):
    """A linear layer with equalized learning rate; `lr_mul` slows it further (the mapping
    network learns 100x slower than the synthesis network)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: Optional[str] = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, LEAKY_SLOPE) * SQRT2
        return F.linear(x, self.weight * self.scale, bias=bias)


class EqualConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: the style scales the weight's input channels
    (modulation), then each output channel's weight is rescaled to unit L2 norm
    (demodulation), which replaces AdaIN's normalisation of the activations.

    Computed as "modulate the input, convolve with the shared weight, demodulate the output"
    (StyleGAN2's non-fused form): the same result as a grouped convolution with per-sample
    weights, but one ordinary convolution for the whole batch, which is what a CPU runs fast.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel: Sequence[float] = DEFAULT_BLUR):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            # transposed conv (stride 2) then the blur: pads that bring 2H+k-1 back to 2H
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        # bias 1: a style starts as the identity scaling
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        style = self.modulation(style)                          # [B, in]
        weight = self.scale * self.weight[0]                    # [out, in, k, k]
        x = x * style.view(batch, self.in_channels, 1, 1)
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum over in, k, k of (w * s)^2, for each sample and output channel
            demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)   # [B, out]
            out = out * demod.view(batch, self.out_channels, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """Per-pixel noise, scaled by a learned per-layer weight (stochastic detail: hair, texture)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """A modulated 1x1 conv to RGB (no demodulation), added to the upsampled RGB of the
    resolution below: StyleGAN2's skip generator."""

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConvLayer(nn.Sequential):
    """The discriminator's conv: [blur], equalized conv (stride 2 when downsampling), [bias +
    leaky ReLU]. A Sequential, so its keys are positional (`0.kernel`, `1.weight`, `2.bias`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = DEFAULT_BLUR, bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two convs (the second halves the resolution) beside a 1x1 downsampling skip, summed
    with 1/sqrt(2) so that the residual sum keeps unit variance."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel: Sequence[float] = DEFAULT_BLUR):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, blur_kernel=blur_kernel, activate=False,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2
