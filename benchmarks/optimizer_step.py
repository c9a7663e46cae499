"""Training-step time with the project's fused Adam against torch's default Adam (per tensor on a CPU).

Two models the pipeline trains: the subject segmenter (the paper's ResNet-34 U-Net, 21M
parameters, whose step is dominated by its weights at 32 px) and the tiny base model's UNet
(1M parameters). For each, the same batch takes a whole step (forward, backward, update) with
`lightning_modules.core.optim.adam` (fused) and with `torch.optim.Adam/AdamW` as torch builds
it by default, in alternating rounds so that load from other processes falls on both alike.
Prints the median step time of each, the optimizer's own share, and the ratio.

Run: python benchmarks/optimizer_step.py [--steps N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from lightning_modules.core.optim import adam
from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.segmentation import ResNet34UNet


def segmenter_case(batch: int) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    net = ResNet34UNet(12)
    images, labels = torch.rand(batch, 3, 32, 32), torch.randint(0, 12, (batch, 32, 32))
    return net, lambda m: F.cross_entropy(m(images), labels)


def unet_case(batch: int) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], torch.Tensor]]:
    sizes = TinySizes()
    tokenizer = build_word_tokenizer(synthworld_words(), rare_token_pool(8), 32)
    unet = tiny_text_to_image(tokenizer, sizes)["unet"]
    latents, noise = torch.randn(batch, 4, 16, 16), torch.randn(batch, 4, 16, 16)
    timesteps, text = torch.randint(0, 1000, (batch,)), torch.randn(batch, 8, sizes.text_width)
    return unet, lambda m: F.mse_loss(m(latents, timesteps, text).sample, noise)


def timed_steps(net: torch.nn.Module, loss_of, optimizer: torch.optim.Optimizer, steps: int) -> tuple[float, float]:
    """Median seconds per whole step and per optimizer update over `steps` steps."""
    whole, update = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_of(net).backward()
        t1 = time.perf_counter()
        optimizer.step()
        t2 = time.perf_counter()
        whole.append(t2 - t0)
        update.append(t2 - t1)
    return statistics.median(whole), statistics.median(update)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, case in (("segmenter (ResNet-34 U-Net, 32 px)", segmenter_case), ("base UNet (latents 16x16)", unet_case)):
        net, loss_of = case(args.batch)
        ours = adam(net.parameters(), lr=1e-4)
        peer = torch.optim.AdamW(net.parameters(), lr=1e-4)   # torch's default on a CPU: per tensor
        timed_steps(net, loss_of, ours, 2)   # warm-up: allocators, optimizer state
        timed_steps(net, loss_of, peer, 2)
        results: dict[str, list[tuple[float, float]]] = {"fused": [], "default": []}
        for _ in range(args.rounds):
            results["fused"].append(timed_steps(net, loss_of, ours, args.steps))
            results["default"].append(timed_steps(net, loss_of, peer, args.steps))
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{name}: {params:.1f}M parameters, batch {args.batch}, {torch.get_num_threads()} threads")
        for kind, rows in results.items():
            step = statistics.median(r[0] for r in rows)
            update = statistics.median(r[1] for r in rows)
            print(f"  {kind:8s} step {step * 1000:7.1f} ms   update {update * 1000:6.1f} ms")
        ratio = statistics.median(d[0] / f[0] for f, d in zip(results["fused"], results["default"]))
        print(f"  default / fused step time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
