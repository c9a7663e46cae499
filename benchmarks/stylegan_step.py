"""The StyleGAN2 iteration (train_stylegan) through Lightning against a plain PyTorch loop, per
precision, and optionally a long training run on the same device with its FID curve.

Both sides train the same StyleGAN2 module (lightning_modules/eclipsed/gan.py), built afresh
from the same seed, on the train split of a faces folder (data/faces, synthesize_faces'):

- lightning: `lightning.Trainer(max_steps=2 x iterations)` fits the module with its manual
  optimization, as the stage does (D step then G step, lazy R1, EMA, its `self.log` calls);
- plain: a loop over the same loader that takes the same two steps with the module's own
  losses and penalties (`discriminator_loss`, `r1_penalty`, `generator_loss`, `update_ema`),
  under `torch.autocast` where the precision is bf16-mixed, as Lightning's plugin does.

The iteration is small (a 64 px generator of 0.4M weights at batch 16): on a GPU it is bound
by kernel launches, so whatever the Trainer adds per step shows. Each side runs --warmup
iterations untimed, then --iterations timed; the better of --repeats counts. Peak memory is
the CUDA allocator's high-water mark per measurement (on a CPU: the process's RSS, which only
grows).

`--train-iterations N` then trains one more module through Lightning for N iterations (or
--train-seconds) at --train-precision and --train-batch-size, with D's DiffAugment policies
(--train-augment), without training the noise inputs with --no-train-noise-inputs, and FID
(the face judge's features, as the stage measures it) every --fid-every iterations, and writes
the FID curve, sample grids and the generator (`StyleGenerator.save_pretrained`, the layout
`train_stylegan.checkpoint` imports) to --out.

Run: python benchmarks/stylegan_step.py [--faces data/faces --judge data/models/face_attributes
     --accelerator gpu --precisions 32 bf16-mixed --train-iterations 20000 --out /tmp/gan]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightning_modules.core.metrics.fid import FrechetDistance
from lightning_modules.core.visual import image_grid
from lightning_modules.data.faces import FaceImages, load_faces, read_faces_folder, signed
from lightning_modules.eclipsed.diffaugment import POLICIES
from lightning_modules.eclipsed.discriminator import Discriminator
from lightning_modules.eclipsed.gan import GanConfig, StyleGAN2, requires_grad, sample_images
from lightning_modules.eclipsed.stylegan import StyleGenerator, channel_table
from lightning_modules.judges.faces import FaceAttributeClassifier

from devices import autocast_for, device_of, peak_mib, reset_peak, sync   # benchmarks/devices.py

SIDES = ("lightning", "plain")
CHANNELS = {4: 128, 8: 128, 16: 64, 32: 32, 64: 16}   # conf/config.yaml train_stylegan.channels


def build(args: argparse.Namespace, config: GanConfig) -> StyleGAN2:
    torch.manual_seed(args.seed)
    table = channel_table(CHANNELS)
    return StyleGAN2(StyleGenerator(table, style_dim=128, n_mlp=4), Discriminator(table), config)


def loader_for(pixels: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    return DataLoader(FaceImages(pixels), batch_size=batch_size, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed), num_workers=0)


class Timer(L.Callback):
    """Wall time of the iterations after the warm-up ones (two optimizer steps each)."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device, self.start, self.seconds = warmup, device, None, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if int(module.iterations) == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start if self.start is not None else float("nan")


def run_lightning(args, pixels, precision: str, iterations: int, batch_size: int,
                  callbacks=(), module: StyleGAN2 | None = None) -> tuple[StyleGAN2, float]:
    device = device_of(args)
    module = module or build(args, GanConfig(lr=2e-3, r1_gamma=1.0, r1_every=16, ema_half_life_images=2000.0))
    timer = Timer(args.warmup, device)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=precision, max_steps=2 * iterations,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer, *callbacks])
    trainer.fit(module, loader_for(pixels, batch_size, args.seed))
    return module, timer.seconds


def run_plain(args, pixels, precision: str, iterations: int, batch_size: int) -> float:
    """The module's iteration without a Trainer: D step (lazy R1), G step, EMA."""
    device = device_of(args)
    module = build(args, GanConfig(lr=2e-3, r1_gamma=1.0, r1_every=16, ema_half_life_images=2000.0)).to(device)
    g_opt, d_opt = module.configure_optimizers()
    cfg = module.config
    autocast = autocast_for(device, precision)
    done, start = 0, None
    while done < iterations:
        for reals in loader_for(pixels, batch_size, args.seed + done):
            if done == args.warmup:
                sync(device)
                start = time.perf_counter()
            if done == iterations:
                break
            reals = reals.to(device, non_blocking=True)
            flip = torch.rand(reals.shape[0], device=device) < 0.5
            reals = torch.where(flip.view(-1, 1, 1, 1), reals.flip(3), reals)
            with autocast:
                requires_grad(module.generator, False)
                requires_grad(module.discriminator, True)
                with torch.no_grad():
                    fakes = module.generator.synthesis(module.sample_ws(reals.shape[0]))
                fake_logits = module.judge(fakes)
                if done % cfg.r1_every == 0:
                    r1, real_logits = module.r1_penalty(reals)
                    d_total = (module.discriminator_loss(real_logits, fake_logits)
                               + cfg.r1_gamma / 2 * r1 * cfg.r1_every)
                else:
                    d_total = module.discriminator_loss(module.judge(reals), fake_logits)
                d_opt.zero_grad(set_to_none=True)
                d_total.backward()
                d_opt.step()
                requires_grad(module.generator, True)
                requires_grad(module.discriminator, False)
                g_loss = module.generator_loss(module.judge(module.generator.synthesis(module.sample_ws(reals.shape[0]))))
                g_opt.zero_grad(set_to_none=True)
                g_loss.backward()
                g_opt.step()
                requires_grad(module.discriminator, True)
            module.images_seen += reals.shape[0]
            module.update_ema(reals.shape[0])
            done += 1
    sync(device)
    return time.perf_counter() - start


def compare(args, pixels) -> list[dict]:
    device = device_of(args)
    rows = []
    for precision in args.precisions:
        best: dict[str, tuple[float, float]] = {}
        for repeat in range(args.repeats):
            for side in (SIDES if repeat % 2 == 0 else SIDES[::-1]):
                reset_peak(device)
                if side == "lightning":
                    _, seconds = run_lightning(args, pixels, precision, args.warmup + args.iterations, args.batch_size)
                else:
                    seconds = run_plain(args, pixels, precision, args.warmup + args.iterations, args.batch_size)
                rate = args.iterations / seconds
                if side not in best or rate > best[side][0]:
                    best[side] = (rate, peak_mib(device))
        row = {"precision": precision, "batch_size": args.batch_size,
               **{f"{side}_it_per_s": round(best[side][0], 2) for side in SIDES},
               **{f"{side}_peak_mib": round(best[side][1], 1) for side in SIDES},
               "lightning_over_plain": round(best["lightning"][0] / best["plain"][0], 3)}
        rows.append(row)
        print(f"{precision:>10}  batch {args.batch_size}: lightning {row['lightning_it_per_s']:.1f} it/s "
              f"({row['lightning_peak_mib']:.0f} MiB), plain {row['plain_it_per_s']:.1f} it/s "
              f"({row['plain_peak_mib']:.0f} MiB), ratio {row['lightning_over_plain']:.3f}", flush=True)
    return rows


class Curve(L.Callback):
    """FID of g_ema against the held-out faces and a grid of fixed latents every `every` iterations."""

    def __init__(self, judge: FaceAttributeClassifier, held_out: torch.Tensor, every: int, samples: int,
                 seconds: float):
        self.judge, self.every, self.samples, self.budget = judge, every, samples, seconds
        self.metric = FrechetDistance(judge.embedding_dim, feature_fn=lambda x: judge.features(((x + 1) / 2).clamp(0, 1)),
                                      reset_real_features=False)
        self.held_out, self.rows, self.grids, self.started = held_out, [], [], time.monotonic()

    def point(self, module: StyleGAN2) -> None:
        if not self.rows:   # the training device; after fit, Lightning has moved the module back to the CPU
            self.device = module.device
        device = self.device
        module.to(device)
        if not self.rows:   # the reference statistics, once, on the training device
            self.judge.to(device)
            self.metric.to(device)
            for start in range(0, len(self.held_out), 256):
                self.metric.update(signed(self.held_out[start:start + 256].to(device)), real=True)
        self.metric.reset()
        fakes = sample_images(module.g_ema, self.samples, seed=0, batch_size=256)
        for start in range(0, len(fakes), 256):
            self.metric.update(fakes[start:start + 256].to(device), real=False)
        fid = float(self.metric.compute())
        row = {"iteration": int(module.iterations), "images": int(module.images_seen), "fid": round(fid, 2),
               "seconds": round(time.monotonic() - self.started, 1)}
        self.rows.append(row)
        print(f"iteration {row['iteration']:>6}  images {row['images']:>8}  FID {fid:8.1f}  {row['seconds']:7.1f} s",
              flush=True)
        tiles = sample_images(module.g_ema, 8, seed=1)
        self.grids.append([(((t + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                           for t in tiles])

    def on_train_start(self, trainer, module):
        self.point(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if int(module.iterations) % self.every == 0:
            self.point(module)
        if time.monotonic() - self.started > self.budget:   # --train-seconds: stop where the time runs out
            trainer.should_stop = True


def train_long(args, pixels, held_out) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = FaceAttributeClassifier.from_pretrained(Path(args.judge))
    curve = Curve(judge, held_out, args.fid_every, args.fid_samples, args.train_seconds)
    module = build(args, GanConfig(lr=args.train_lr, r1_gamma=1.0, r1_every=16, ema_half_life_images=2000.0,
                                   augment=tuple(args.train_augment), noise_inputs=args.train_noise_inputs))
    started = time.perf_counter()
    module, _ = run_lightning(args, pixels, args.train_precision, args.train_iterations, args.train_batch_size,
                              callbacks=[curve], module=module)
    seconds = time.perf_counter() - started
    if int(module.iterations) % args.fid_every:
        curve.point(module)
    generator = module.g_ema.cpu().eval()
    generator.update_latent_avg(generator=torch.Generator().manual_seed(args.seed))
    generator.save_pretrained(out)
    with (out / "fid.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve.rows[0]))
        writer.writeheader()
        writer.writerows(curve.rows)
    # one row of 8 fixed latents per curve point, top to bottom
    rows = [image_grid(tiles, columns=8) for tiles in curve.grids]
    Image.fromarray(np.concatenate(rows, 0)).save(out / "curve_grids.png")
    final = sample_images(generator, 64, seed=1)
    Image.fromarray(image_grid([(((t + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                                for t in final], columns=8)).save(out / "samples.png")
    return {"precision": args.train_precision, "batch_size": args.train_batch_size, "lr": args.train_lr,
            "augment": list(args.train_augment), "noise_inputs": args.train_noise_inputs,
            "iterations": int(module.iterations), "seconds": round(seconds, 1),
            "it_per_s": round(int(module.iterations) / seconds, 2), "fid_curve": curve.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", default="data/faces")
    parser.add_argument("--judge", default="data/models/face_attributes")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precisions", nargs="+", default=["32"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-iterations", type=int, default=0)
    parser.add_argument("--train-seconds", type=float, default=float("inf"), help="stop training after this long")
    parser.add_argument("--train-precision", default="bf16-mixed")
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--train-lr", type=float, default=2e-3)
    parser.add_argument("--train-augment", nargs="*", default=[], choices=sorted(POLICIES),
                        help="DiffAugment policies for D in the long run (train_stylegan.augment)")
    parser.add_argument("--train-noise-inputs", action=argparse.BooleanOptionalAction, default=True,
                        help="train the noise strengths in the long run (train_stylegan.noise_inputs)")
    parser.add_argument("--fid-every", type=int, default=1000)
    parser.add_argument("--fid-samples", type=int, default=800)
    parser.add_argument("--out", default="stylegan_step_out")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_float32_matmul_precision("high")

    faces = read_faces_folder(Path(args.faces))
    pixels = load_faces(faces.split("train"), faces.image_size)
    held_out = load_faces([r for r in faces.records if r.split in ("val", "test")], faces.image_size)
    device = device_of(args)
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"lightning {L.__version__}; {len(pixels)} train faces, {len(held_out)} held out", flush=True)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "compare": compare(args, pixels) if args.iterations > 0 else []}
    if args.train_iterations > 0:
        report["train"] = train_long(args, pixels, held_out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
