"""The MSP sampler's cost per step, against the bare batched UNet calls it needs, in the same run.

Both sides draw one composition (S segments, B images) over --steps DDIM steps with the tiny
model at the zoo's default sizes:

- msp: `CompositeSampler` as the msp stage runs it (scaffolding for the first 30 % of the steps,
  then harmonization with the global diffuser for 2 steps): the masks, the mixing, the
  classifier-free guidance and the scheduler steps around the UNet;
- bare: the same prompt embeddings, then exactly the UNet calls the sampler makes (the same
  batch shapes: 2 S B while scaffolding, (S + 2) B with the global diffuser, (S + 1) B after)
  and the same final decode, and nothing else.

The ratio is what the sampler adds to the network's own work (target: at most 1.15x). Two more
pairs of sides do the same with ControlNet-OpenPose steering every UNet call (a ControlNet built
from the UNet, as train_controlnet builds it): the sampler against the bare UNet + ControlNet
calls, and the sampler with ControlNet against it without (ControlNet's own cost). A last
side runs the sampler with SAL on every step (a VAE decode and a segmenter pass with their
backward per step; the segmenter is the ResNet-34 U-Net at the default decoder sizes) and
prints its overhead. The repeats alternate the order and the best repeat counts; the
sampler's own time outside its UNet calls is printed too (the two sides' totals are noisy at
this size, where a step is tens of milliseconds).
Run: python benchmarks/msp_step.py [--steps 20 --segments 3 --images 4 --repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.msp import CompositeSampler, MSPSettings
from lightning_modules.msp.controlnet import build_controlnet
from lightning_modules.segmentation import ResNet34UNet
from tasks.core.schema.diffusion import ZooConfig

SIZE = 32


def masks_for(segments: int) -> torch.Tensor:
    """Vertical stripes: segment 0 the background columns, the others one stripe each."""
    masks = torch.zeros(segments, SIZE, SIZE, dtype=torch.bool)
    width = SIZE // segments
    for j in range(segments):
        masks[j, :, j * width:(j + 1) * width if j < segments - 1 else SIZE] = True
    return masks


def build(args):
    zoo = ZooConfig()
    tokenizer = build_word_tokenizer(synthworld_words(), rare_token_pool(8), max_length=16)
    parts = tiny_text_to_image(tokenizer, TinySizes(resolution=zoo.resolution, unet_channels=tuple(zoo.unet_channels),
                                                    vae_channels=tuple(zoo.vae_channels), text_width=zoo.text_width,
                                                    text_layers=zoo.text_layers))
    for name in ("unet", "vae", "text_encoder"):
        parts[name].eval().requires_grad_(False)
    segmenter = ResNet34UNet(num_classes=12, image_size=SIZE).eval()
    return parts, segmenter


UNET_SECONDS = [0.0]   # time inside the UNet calls of the last msp run


def pose() -> torch.Tensor:
    image = torch.zeros(3, SIZE, SIZE)
    image[0, 4:28, 10:12] = 1.0
    return image


def run_msp(parts, segmenter, settings, args, controlnet=None) -> float:
    sampler = CompositeSampler(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"],
                               parts["scheduler"], settings, segmenter=segmenter, segmenter_size=SIZE,
                               controlnet=controlnet)
    unet_call = sampler.unet_batch
    UNET_SECONDS[0] = 0.0

    def timed(*call):
        begin = time.perf_counter()
        out = unet_call(*call)
        UNET_SECONDS[0] += time.perf_counter() - begin
        return out

    sampler.unet_batch = timed
    prompts = ["on a beach"] + [f"a {w} cartoon" for w in rare_token_pool(args.segments - 1)]
    generators = [torch.Generator().manual_seed(i) for i in range(args.images)]
    start = time.perf_counter()
    sampler(masks_for(args.segments), prompts, "a cartoon on a beach", generators,
            subject_segments=list(range(1, args.segments)), pose=pose() if controlnet is not None else None)
    return time.perf_counter() - start


@torch.no_grad()
def run_bare(parts, settings, args, controlnet=None) -> float:
    sampler = CompositeSampler(parts["unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"],
                               parts["scheduler"], settings, controlnet=controlnet)
    sampler.condition = None if controlnet is None else pose().unsqueeze(0)
    s, b = args.segments, args.images
    latent = parts["unet"].config.sample_size
    start = time.perf_counter()
    prompts = sampler.embed(["on a beach"] + [f"a {w} cartoon" for w in rare_token_pool(s - 1)])
    empty, glob = sampler.embed([""]), sampler.embed(["a cartoon on a beach"])
    sampler.scheduler.set_timesteps(settings.steps)
    k = settings.scaffolding_steps
    for i, t in enumerate(sampler.scheduler.timesteps):
        if i < k:
            batch = torch.cat([prompts.repeat_interleave(b, 0), empty.expand(s * b, -1, -1)])
        elif i - k < settings.global_steps:
            batch = torch.cat([p.repeat_interleave(b, 0) for p in (prompts, glob, empty)])
        else:
            batch = torch.cat([p.repeat_interleave(b, 0) for p in (prompts, empty)])
        sampler.unet_batch(torch.randn(batch.shape[0], 4, latent, latent), t, batch)
    sampler.decode(torch.randn(b, 4, latent, latent))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    parts, segmenter = build(args)
    controlnet = build_controlnet(parts["unet"], SIZE).eval().requires_grad_(False)
    plain = MSPSettings(steps=args.steps, guidance_scale=3.0)
    with_sal = MSPSettings(steps=args.steps, guidance_scale=3.0, sal=True, sal_range=(0.0, 1.0))
    sides = {"bare": lambda: run_bare(parts, plain, args), "msp": lambda: run_msp(parts, segmenter, plain, args),
             "msp+sal": lambda: run_msp(parts, segmenter, with_sal, args),
             "bare+cn": lambda: run_bare(parts, plain, args, controlnet),
             "msp+cn": lambda: run_msp(parts, segmenter, plain, args, controlnet)}
    for side in sides.values():   # warm-up: first calls allocate
        side()
    best = {name: float("inf") for name in sides}
    outside = float("inf")   # the msp run's time outside its UNet calls, at its best
    for repeat in range(args.repeats):
        order = list(sides) if repeat % 2 == 0 else list(sides)[::-1]
        for name in order:
            seconds = sides[name]()
            if name == "msp":
                outside = min(outside, seconds - UNET_SECONDS[0])
            best[name] = min(best[name], seconds)
    print(f"{args.segments} segments x {args.images} images, {args.steps} steps, {args.threads} threads, "
          f"best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:8s} {seconds * 1000 / args.steps:8.1f} ms/step   {args.images * args.segments / seconds:6.2f} "
              f"segment-images/s")
    print(f"msp / bare UNet calls: {best['msp'] / best['bare']:.3f}x (target <= 1.15x)")
    print(f"msp outside its UNet calls (masks, mixing, guidance, scheduler, encode, decode): "
          f"{outside * 1000 / args.steps:.1f} ms/step")
    print(f"with ControlNet, msp / bare UNet + ControlNet calls: {best['msp+cn'] / best['bare+cn']:.3f}x "
          f"(target <= 1.15x)")
    print(f"ControlNet: {best['msp+cn'] / best['msp']:.2f}x the sampler without it")
    print(f"SAL on every step: {best['msp+sal'] / best['msp']:.2f}x the sampler without it")


if __name__ == "__main__":
    main()
