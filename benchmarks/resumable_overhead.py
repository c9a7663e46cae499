"""What exact resume costs per step: the project's resumable training against Lightning's usual set-up.

Both sides fit the same tiny LoRA fine-tuning as benchmarks/finetune_overhead.py (same
module, data and seed) with a Lightning Trainer:

- usual: a `DataLoader(shuffle=True)` with a seeded generator, no extra callback (what the
  stages used before runs resumed exactly);
- resumable: what every training stage now runs (tasks/core/trainer.py): the resumable
  loader (order by (seed, epoch), its place in the epoch kept in checkpoints), the
  `StopSafely` callback (per-step seeding, signal and store checks), the atomic checkpoint
  writer.

Checkpoints are not written inside the timed window (their cost is the same on both sides:
the resumable loader adds two integers to them). Repeats alternate which side goes first;
the best repeat counts. Run: python benchmarks/resumable_overhead.py [--steps 60 --repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import lightning as L
import torch

from finetune_overhead import StepClock, build, write_images
from lightning_modules.core.resumable import shuffled_loader
from lightning_modules.diffusion.tiny import TinySizes
from tasks.core.quiet import silence_known_noise
from tasks.core.trainer import AtomicCheckpointIO, StopSafely

SIDES = ("usual", "resumable")


def run(side: str, args: argparse.Namespace, images, checkpoints: Path) -> float:
    module, loader = build(args, images)
    callbacks: list[L.Callback] = [StepClock(args.warmup, args.steps)]
    plugins = []
    if side == "resumable":
        loader = shuffled_loader(loader.dataset, args.batch_size, seed=args.seed, drop_last=True,
                                 num_workers=args.num_workers)
        callbacks.append(StopSafely(args.seed, checkpoints, uri="none"))
        plugins.append(AtomicCheckpointIO())
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=args.warmup + args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, plugins=plugins, use_distributed_sampler=side == "usual")
    torch.manual_seed(args.seed)
    trainer.fit(module, train_dataloaders=loader)
    assert trainer.global_step == args.warmup + args.steps, trainer.global_step
    clock = callbacks[0]
    return args.steps / (clock.stop - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--images-per-subject", type=int, default=4)
    parser.add_argument("--class-images", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=TinySizes().resolution)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    silence_known_noise()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*(num_workers|log_every_n_steps|does not have many workers).*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

    with tempfile.TemporaryDirectory() as tmp:
        images = write_images(Path(tmp), args)
        print(f"LoRA fine-tuning, batch {args.batch_size} + {args.batch_size} at {args.resolution}px, cpu, "
              f"{torch.get_num_threads()} torch threads; {args.steps} timed steps after {args.warmup}, "
              f"best of {args.repeats}")
        speeds: dict[str, list[float]] = {side: [] for side in SIDES}
        for repeat in range(args.repeats):
            order = SIDES if repeat % 2 == 0 else SIDES[::-1]
            for side in order:
                speed = run(side, args, images, Path(tmp) / "checkpoints")
                speeds[side].append(speed)
                print(f"repeat {repeat}  {side:>9}  {speed:7.2f} steps/s", flush=True)
        usual, resumable = max(speeds["usual"]), max(speeds["resumable"])
        print(f"best: usual {usual:.2f} steps/s, resumable {resumable:.2f} steps/s, "
              f"ratio resumable/usual {resumable / usual:.3f} ({100 * (usual / resumable - 1):+.1f}% time per step)")


if __name__ == "__main__":
    main()
