"""What the step benchmarks share: the device an --accelerator names, and timing and peak memory
that mean the same on a CPU and on a GPU."""

from __future__ import annotations

import argparse
import contextlib
import resource

import torch


def device_of(args: argparse.Namespace) -> torch.device:
    return torch.device("cuda" if args.accelerator == "gpu" else "cpu")


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float:
    """The CUDA allocator's high-water mark since reset_peak; on a CPU the process's peak RSS
    (which only grows)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def autocast_for(device: torch.device, precision: str):
    """What Lightning's bf16-mixed plugin wraps a step in, for a plain loop; nothing for 32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else contextlib.nullcontext()
