"""What this machine can hold, and the estimates that refuse a run before it allocates.

The schema bounds every number to what a method means; a combination of bounded numbers can
still ask for more than a machine has (a batch of 4096 images of 4096^2 pixels). Stages
estimate such combinations before any work and stop with one line naming the keys, the
estimate and what the machine has. Estimates are lower bounds (the input tensors and the first
feature map of a network, the most compressible PNGs this pipeline writes), so a run that
is refused could never have fitted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from tasks.core.errors import ParamsError

FLOAT32 = 4
# Bytes per pixel of the PNGs this pipeline writes (compress_level 1), at least: SynthWorld's
# flat renders, the most compressible pictures it makes, take about 0.04 (RGB) and 0.02 (masks).
PNG_RGB = 0.03
PNG_MASK = 0.015


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def total_memory() -> int:
    """Physical memory in bytes: what a run can ever hold, whatever else runs at the moment."""
    import psutil

    return psutil.virtual_memory().total


def free_disk(path: Path) -> int:
    """Free bytes on the file system `path` will be written to (it may not exist yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def require_memory(need: float, what: str, have: Optional[int] = None, device: str = "memory") -> None:
    """Refuse `what` when it needs more than `have` bytes (default: this machine's memory)."""
    have = total_memory() if have is None else have
    if need > have:
        raise ParamsError(f"{what} needs at least {human(need)} of {device}; this machine has {human(have)}")


def require_disk(target: Path, need: float, what: str) -> None:
    """Refuse `what` when writing `need` bytes under `target` cannot fit the free disk."""
    free = free_disk(target)
    if need > free:
        raise ParamsError(f"{what} needs at least {human(need)} of disk; {human(free)} free under {target}")
