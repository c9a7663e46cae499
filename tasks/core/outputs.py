"""Write-then-rename outputs: a stage either publishes all of its outs or none of them."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temporary_twin(target: Path) -> Path:
    """A hidden sibling of `target` on the same filesystem, so the final rename is atomic."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_outputs(*targets: Path) -> Iterator[list[Path]]:
    """Yield temporary paths for `targets`; publish them all only if the block succeeds.

    On any error (including Ctrl-C) the temporaries are deleted and the targets are left
    absent, so nothing half-written looks finished to DVC or to the next stage.
    """
    temps = [temporary_twin(Path(t)) for t in targets]
    for target, tmp in zip(targets, temps):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        remove(tmp)
    try:
        yield temps
    except BaseException:
        for tmp in temps:
            remove(tmp)
        raise
    for target, tmp in zip(targets, temps):
        if not tmp.exists():
            raise RuntimeError(f"stage did not write its output {target}")
    for target, tmp in zip(targets, temps):
        remove(Path(target))
        os.replace(tmp, target)
