"""The memory a training batch of each stage needs at least, against this machine.

Each estimate is a lower bound: the batch's own tensors (float32 images, labels) plus, where
every configuration computes it, the first full-resolution feature map the backward pass
keeps. A batch refused here could never have fitted; one accepted may still be too large for
the rest of its network, which Lightning reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.core.machine import FLOAT32, require_memory, total_memory

if TYPE_CHECKING:
    from tasks.core.params import TrainerConfig
    from tasks.core.schema.deskpro import EvaluateReidConfig, ReidConfig
    from tasks.core.schema.diffusion import FinetuneConfig, PretrainBaseConfig, PretrainClipConfig, ZooConfig
    from tasks.core.schema.msp import AugmentConfig, TrainSegmenterConfig

RGB = 3 * FLOAT32                 # an image pixel as a float32 tensor
LABEL = 8                         # an int64 class label per pixel (cross-entropy targets)
# ResNet-34's stem: 64 channels at half resolution, i.e. 16 float32 values per input pixel.
RESNET_STEM = 64 // 4 * FLOAT32
# The tiny VAE's first convolution: 32 channels at full resolution (lightning_modules/diffusion/tiny.py).
VAE_STEM = 32 * FLOAT32


@dataclass(frozen=True)
class BatchEstimate:
    keys: str        # the params keys that set its size, as the user reads them
    bytes: float


def batch_memory(trainer: "TrainerConfig", augment: "AugmentConfig", segmenter: "TrainSegmenterConfig",
                 reid: "ReidConfig", evaluate: "EvaluateReidConfig", zoo: "ZooConfig",
                 pretrain_base: "PretrainBaseConfig", pretrain_clip: "PretrainClipConfig",
                 finetune: "FinetuneConfig") -> list[BatchEstimate]:
    """The training and evaluation batches of the pipeline with the memory each needs at least."""
    # the segmenter trains at train_segmenter.image_size (none: the canvas, to a multiple of 32)
    side, side_key = (segmenter.image_size, "train_segmenter.image_size") if segmenter.image_size \
        else (augment.canvas_size, "augment.canvas_size")
    canvas = side ** 2
    height, width = reid.image_size
    person = height * width * (RGB + FLOAT32) + 2 * reid.face_size ** 2 * RGB   # body, cloth mask, two faces
    estimates = [
        BatchEstimate(f"train_segmenter.batch_size {segmenter.batch_size} x {side_key} {side}^2",
                      segmenter.batch_size * canvas * (RGB + LABEL + RESNET_STEM)),
        BatchEstimate(f"reid.identities_per_batch {reid.identities_per_batch} x reid.images_per_identity "
                      f"{reid.images_per_identity} x reid.image_size {height}x{width}",
                      reid.identities_per_batch * reid.images_per_identity * person),
        BatchEstimate(f"evaluate_reid.batch_size {evaluate.batch_size} x reid.image_size {height}x{width}",
                      evaluate.batch_size * person),
    ]
    if zoo.text_to_image == "tiny":   # a real model's resolution is its own, not zoo.resolution
        pixels = zoo.resolution ** 2
        pairs = 2 if finetune.prior_preservation else 1   # instance + class image per sample
        estimates += [
            BatchEstimate(f"pretrain_base.vae_batch_size {pretrain_base.vae_batch_size} x zoo.resolution "
                          f"{zoo.resolution}^2", pretrain_base.vae_batch_size * pixels * (RGB + VAE_STEM)),
            BatchEstimate(f"finetune.batch_size {finetune.batch_size} x zoo.resolution {zoo.resolution}^2"
                          + (" x 2 (prior preservation)" if pairs == 2 else ""),
                          finetune.batch_size * pairs * pixels * (RGB + VAE_STEM)),
        ]
    if zoo.clip == "tiny":
        estimates.append(BatchEstimate(
            f"pretrain_clip.batch_size {pretrain_clip.batch_size} x zoo.resolution {zoo.resolution}^2",
            pretrain_clip.batch_size * zoo.resolution ** 2 * RGB))
    return estimates


def _device_memory(trainer: "TrainerConfig") -> tuple[int, str, int]:
    """(bytes one training process may use, what they are, processes sharing them)."""
    if trainer.accelerator in ("cuda", "gpu", "auto"):
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            indices = trainer.devices if isinstance(trainer.devices, list) else range(count)
            smallest = min(torch.cuda.get_device_properties(i).total_memory for i in indices if i < count)
            return smallest, "GPU memory", 1
    processes = trainer.devices if isinstance(trainer.devices, int) else 1
    return total_memory(), "memory", processes


def check_batches(estimates: list[BatchEstimate], trainer: "TrainerConfig") -> None:
    have, device, processes = _device_memory(trainer)
    for estimate in estimates:
        # DDP on one machine's CPU runs one process per device, each with its own batch.
        shared = f" x trainer.devices {processes}" if processes > 1 else ""
        require_memory(estimate.bytes * processes, f"a batch of {estimate.keys}{shared}", have, device)
