"""Lightning's per-step overhead on LoRA fine-tuning, against a plain PyTorch loop in the same run.

Both sides train the tiny Stable Diffusion with SubjectFinetuner in mode "lora" (plus the
identifier embedding rows, as the stage does by default) with prior preservation (every batch: B instance images with "a <id> <class>" plus B class images with
"a <class>", one UNet forward over the 2B), built afresh from the same seed, reading the same
DreamBoothPairs through the same DataLoader settings, with the optimizer and LR schedule of
`configure_optimizers`:

- lightning: `lightning.Trainer(accelerator="cpu", max_steps=...)` fits the module, as the
  finetune stage does (its `training_step`, with its `self.log` calls and the finite check);
- plain: a `for batch in loader` loop calling the same `compute_loss` that `training_step`
  calls (VAE encode, denoising losses, instance + lambda * prior loss) and the same finite
  check, then `backward`, `optimizer.step`, `zero_grad`, `scheduler.step`.

On the tiny model a step is short, so whatever the Trainer adds per step (hooks, logging,
the closure, the prefetching fetcher) shows; with the real SD model it would vanish into the
UNet. Each side runs --warmup steps untimed, then --steps timed ones; the repeats alternate
which side goes first and the best repeat counts. Peak RSS is the process's high-water mark
(ru_maxrss), so it only grows through the run; it is read after every measurement.
Run: python benchmarks/finetune_overhead.py [--steps 60 --warmup 5 --repeats 3 --batch-size 4]
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightning_modules.diffusion.data import CaptionedImage, DreamBoothPairs
from lightning_modules.diffusion.finetune import FinetuneSettings, SubjectFinetuner
from lightning_modules.diffusion.identifiers import add_identifier_tokens
from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.synthworld.subjects import CLASS_NOUNS, IDENTIFIER_POOL
from lightning_modules.core.losses import check_finite

SIDES = ("lightning", "plain")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_images(root: Path, args: argparse.Namespace) -> tuple[list[CaptionedImage], list[str],
                                                                  dict[str, list[CaptionedImage]]]:
    """Random-noise PNGs at the tiny resolution: instance images per subject, class images per class."""
    rng = np.random.default_rng(args.seed)

    def png(name: str) -> Path:
        path = root / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (args.resolution, args.resolution, 3), dtype=np.uint8)).save(path)
        return path

    instances, classes, class_images = [], [], {}
    for s in range(args.subjects):
        noun = CLASS_NOUNS[s % len(CLASS_NOUNS)]
        for i in range(args.images_per_subject):
            instances.append(CaptionedImage(png(f"subject{s}_{i}"), f"a {IDENTIFIER_POOL[s]} {noun}"))
            classes.append(noun)
        if noun not in class_images:
            class_images[noun] = [CaptionedImage(png(f"{noun}_{i}"), f"a {noun}") for i in range(args.class_images)]
    return instances, classes, class_images


def build(args: argparse.Namespace, images) -> tuple[SubjectFinetuner, DataLoader]:
    """A fresh tiny model with identifier tokens and LoRA, and its loader, from the seed."""
    torch.manual_seed(args.seed)
    tokenizer = build_word_tokenizer(synthworld_words(), rare_token_pool(64), 32)
    components = tiny_text_to_image(tokenizer, TinySizes(resolution=args.resolution))
    tokens = add_identifier_tokens(tokenizer, components["text_encoder"], list(IDENTIFIER_POOL[:args.subjects]),
                                   rare_token_pool(64))
    settings = FinetuneSettings(mode="lora", prior_preservation_weight=1.0, lr=1e-3, text_encoder_lr=5e-5,
                                embedding_lr=5e-3, weight_decay=1e-2, lora_rank=4, lora_alpha=4.0,
                                train_identifier_embeddings=True)  # the stage's default: identifier rows learn too
    module = SubjectFinetuner(components["unet"], components["vae"], components["text_encoder"],
                              components["scheduler"], settings, identifier_ids=[t.token_id for t in tokens])
    instances, classes, class_images = images
    dataset = DreamBoothPairs(instances, classes, class_images, tokenizer, args.resolution)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.num_workers, generator=torch.Generator().manual_seed(args.seed))
    return module, loader


class StepClock(L.Callback):
    """Times the steps after the warm-up: from the end of the last warm-up step to the end of the last step."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.seen = warmup, steps, 0
        self.start = self.stop = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            self.start = time.perf_counter()
        elif self.seen == self.warmup + self.steps:
            self.stop = time.perf_counter()


def run_lightning(args: argparse.Namespace, images) -> float:
    module, loader = build(args, images)
    clock = StepClock(args.warmup, args.steps)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.warmup + args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[clock])
    torch.manual_seed(args.seed)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == args.warmup + args.steps, trainer.global_step
    return args.steps / (clock.stop - clock.start)


def run_plain(args: argparse.Namespace, images) -> float:
    module, loader = build(args, images)
    module.train()
    module.on_fit_start()   # the modes Lightning's fit sets: the frozen VAE in eval
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    torch.manual_seed(args.seed)
    step, start = 0, 0.0
    while step < args.warmup + args.steps:
        for batch in loader:
            loss = check_finite(module.compute_loss(batch).loss, "fine-tuning loss", step)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            if step == args.warmup:
                start = time.perf_counter()
            if step == args.warmup + args.steps:
                break
    return args.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4, help="instance images per batch (as many class images)")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--images-per-subject", type=int, default=4)
    parser.add_argument("--class-images", type=int, default=4, help="class images per class")
    parser.add_argument("--resolution", type=int, default=TinySizes().resolution)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the clock starts at the end of the last warm-up step)")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(num_workers|log_every_n_steps|does not have many workers).*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # lightning vs newer torch

    with tempfile.TemporaryDirectory() as tmp:
        images = write_images(Path(tmp), args)
        module, _ = build(args, images)
        total = sum(p.numel() for p in module.parameters())
        trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
        del module
        print(f"LoRA fine-tuning, batch {args.batch_size} instance + {args.batch_size} class images at "
              f"{args.resolution}px, {len(images[0])} instance images, cpu, {torch.get_num_threads()} torch threads")
        print(f"parameters: {total:,} total, {trained:,} trainable ({100 * trained / total:.2f}%)")
        print(f"{args.steps} timed steps after {args.warmup} warm-up steps, best of {args.repeats}")
        print(f"{'repeat':>6}  {'side':>9}  {'steps/s':>8}  {'peak RSS MiB':>12}")
        runs = {"lightning": run_lightning, "plain": run_plain}
        speeds: dict[str, list[float]] = {side: [] for side in SIDES}
        for repeat in range(args.repeats):
            for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
                speeds[side].append(runs[side](args, images))
                print(f"{repeat + 1:>6}  {side:>9}  {speeds[side][-1]:8.2f}  {peak_rss_mib():12.0f}", flush=True)
    best = {side: max(v) for side, v in speeds.items()}
    for side in SIDES:
        print(f"{side:>9}: {best[side]:6.2f} steps/s  ({1000 / best[side]:.1f} ms/step)")
    ratio = best["lightning"] / best["plain"]
    print(f"lightning/plain = {ratio:.2f} (overhead {100 * (1 / ratio - 1):.1f}%)")


if __name__ == "__main__":
    main()
