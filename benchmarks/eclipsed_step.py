"""eCLIPsed's direction-learning step (eclipsed@<row>) through Lightning against a plain PyTorch
loop, per precision, in the same run.

Both sides train the same `LatentDirections` module (lightning_modules/eclipsed/directions.py),
built afresh from the same seed, against the same frozen generator, CLIP and part segmenter,
with the paper's final configuration (W+, layers 3-4, localization 0.05, "a person with curly
hair" on the hair mask):

- lightning: `lightning.Trainer(max_steps=...)` fits the module as the stage does (its
  `self.log` calls, Adam with LELSD's halving schedule, the unit renormalisation after each
  step);
- plain: a loop over the same seeds that takes the same steps with the module's own
  `loss_terms`, optimizer and schedule, and renormalises the same way, under `torch.autocast`
  where the precision is bf16-mixed, as Lightning's plugin does.

The models are the default profile's sizes, at random init (a step's cost does not depend on the
weights): the 64 px generator of conf/config.yaml (train_stylegan.channels), the zoo's tiny CLIP
and the ResNet-34 U-Net part segmenter with the face parts' 10 classes. `--workspace DIR` reads
the trained ones from a workspace instead (data/models/stylegan, data/models/clip/model,
data/models/face_parts). Each side runs --warmup steps untimed, then --steps timed; the better of
--repeats counts (they alternate the order). A second table splits one plain step into its
parts (generator forward, CLIP, segmenter masks, backward) to show where the time goes.

Run: python benchmarks/eclipsed_step.py [--accelerator gpu --precisions 32 bf16-mixed
     --batch-sizes 4 16 --workspace . --threads 1]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from lightning_modules.diffusion.tiny import TinySizes, tiny_clip
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, synthworld_words
from lightning_modules.eclipsed.clip import ClipEmbedder
from lightning_modules.eclipsed.directions import DirectionSettings, LatentDirections, PartMask, unit_directions
from lightning_modules.eclipsed.stylegan import StyleGenerator
from lightning_modules.segmentation import ResNet34UNet

from devices import autocast_for, device_of, peak_mib, reset_peak, sync   # benchmarks/devices.py

SIDES = ("lightning", "plain")
CHANNELS = {4: 128, 8: 128, 16: 64, 32: 32, 64: 16}   # conf/config.yaml train_stylegan.channels
PARTS = ["background", "skin", "neck", "hair", "eyes", "brows", "nose", "mouth", "glasses", "beard"]
PROMPT = "a person with curly hair"
FINAL = dict(latent_space="w+", layers=(3, 4), localization_weight=0.05, alpha_range=(0.5, 4.0), lr=1e-2)


def frozen_models(args: argparse.Namespace) -> tuple[StyleGenerator, ClipEmbedder, PartMask]:
    torch.manual_seed(args.seed)
    if args.workspace:
        models = Path(args.workspace) / "data" / "models"
        generator = StyleGenerator.from_pretrained(models / "stylegan")
        path = models / "clip" / "model"
        clip = ClipEmbedder.from_processor(CLIPModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                                           AutoImageProcessor.from_pretrained(path))
        segmenter = ResNet34UNet.from_pretrained(models / "face_parts")
    else:
        generator = StyleGenerator(CHANNELS, style_dim=128, n_mlp=4)
        tokenizer = build_word_tokenizer(synthworld_words() + PROMPT.split(), [], max_length=32)
        model, processor = tiny_clip(tokenizer, TinySizes())
        clip = ClipEmbedder.from_processor(model, tokenizer, processor)
        segmenter = ResNet34UNet(num_classes=len(PARTS), image_size=generator.size, class_names=PARTS)
    segmenter = segmenter.eval().requires_grad_(False)
    side = segmenter.image_size or generator.size
    return generator.eval(), clip.eval(), PartMask(segmenter, segmenter.class_names.index("hair"), side)


def build(args, models, steps: int) -> LatentDirections:
    generator, clip, mask = models
    settings = DirectionSettings(steps=steps, init_seed=args.seed, **FINAL)
    return LatentDirections(generator, clip, clip.texts([PROMPT])[0], settings, mask)


def seeds_loader(steps: int, batch_size: int) -> DataLoader:
    return DataLoader(torch.arange(steps * batch_size), batch_size=batch_size, shuffle=False)


class Timer(L.Callback):
    """Wall time of the steps after the warm-up ones."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.start, self.seconds = warmup, device, None, float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync(self.device)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def run_lightning(args, models, precision: str, batch_size: int) -> float:
    device, total = device_of(args), args.warmup + args.steps
    module = build(args, models, total)
    timer = Timer(args.warmup, device)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=precision, max_steps=total,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, seeds_loader(total, batch_size))
    return timer.seconds


def run_plain(args, models, precision: str, batch_size: int) -> float:
    device, total = device_of(args), args.warmup + args.steps
    module = build(args, models, total).to(device)
    module.on_fit_start()   # the frozen models to the device, as Lightning's hook does
    configured = module.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    start = None
    for step, seeds in enumerate(seeds_loader(total, batch_size)):
        if step == args.warmup:
            sync(device)
            start = time.perf_counter()
        with autocast_for(device, precision):
            loss = module.loss_terms(seeds.to(device))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            module.directions.copy_(unit_directions(module.directions))   # the module's optimizer_step
    sync(device)
    return time.perf_counter() - start


def compare(args, models) -> list[dict]:
    device = device_of(args)
    rows = []
    for precision in args.precisions:
        for batch_size in args.batch_sizes:
            best: dict[str, tuple[float, float]] = {}
            for repeat in range(args.repeats):
                for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                    reset_peak(device)
                    run = run_lightning if side == "lightning" else run_plain
                    rate = args.steps / run(args, models, precision, batch_size)
                    if side not in best or rate > best[side][0]:
                        best[side] = (rate, peak_mib(device))
            row = {"precision": precision, "batch_size": batch_size,
                   **{f"{side}_steps_per_s": round(best[side][0], 2) for side in SIDES},
                   "lightning_over_plain": round(best["lightning"][0] / best["plain"][0], 3),
                   "peak_mib": round(max(b[1] for b in best.values()), 1)}
            rows.append(row)
            print(f"{precision:>10}  batch {batch_size:>3}: lightning {row['lightning_steps_per_s']:.1f} steps/s, "
                  f"plain {row['plain_steps_per_s']:.1f} steps/s, ratio {row['lightning_over_plain']:.3f}, "
                  f"peak {row['peak_mib']:.0f} MiB", flush=True)
    return rows


def parts_of_a_step(args, models, batch_size: int, repeats: int = 20) -> dict[str, float]:
    """Milliseconds of the plain step's parts, fp32: where a step's time goes."""
    device = device_of(args)
    module = build(args, models, 100).to(device)
    module.on_fit_start()
    generator, clip, mask = module.generator, module.clip, module.part_mask
    seeds = torch.arange(batch_size, device=device)
    moved = (module.style_codes(seeds) + module.full_directions()[0]).detach().requires_grad_(True)
    edited = generator.synthesis(moved, noise="const")
    parts = {"style codes": lambda: module.style_codes(seeds),
             "generator (edit, with features)": lambda: generator.synthesis(moved, noise="const", return_features=True),
             "clip image embedding": lambda: clip.images(edited),
             "segmenter masks (original + edit)": lambda: mask(torch.cat([edited, edited]).detach()),
             "whole step (forward + backward)": lambda: module.loss_terms(seeds)["loss"].backward()}
    out = {}
    for name, part in parts.items():
        part()   # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            part()
        sync(device)
        out[name] = round((time.perf_counter() - start) / repeats * 1000, 1)
        print(f"    {name:<36} {out[name]:8.1f} ms", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precisions", nargs="+", default=["32"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[4], help="eclipsed.batch_size: 4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", default=None, help="read the trained models from this workspace")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (one is the steadiest on shared cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = device_of(args)
    models = frozen_models(args)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, lightning {L.__version__}; "
          f"generator {models[0].size} px, {'trained models from ' + args.workspace if args.workspace else 'random init'}",
          flush=True)
    compare(args, models)
    print(f"  one plain step's parts, fp32, batch {args.batch_sizes[0]}:")
    parts_of_a_step(args, models, args.batch_sizes[0])


if __name__ == "__main__":
    main()
