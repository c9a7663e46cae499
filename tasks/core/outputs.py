"""Whole-stage publishing: a stage's outputs become visible together, or not at all.

A stage writes each output into a hidden staging twin beside it (same filesystem, so a
rename is atomic). When all of them are written, publishing swaps them in under a journal:

1. the journal (`.<first output>.publish.json`) is written atomically, naming every
   output, its staging twin, and whether an old version existed;
2. for each output: old version -> `.<name>.replaced`, staging twin -> output;
3. the journal is deleted: this is the commit point;
4. the replaced old versions are deleted.

A failure inside step 2 rolls the swap back at once. A kill inside step 2 leaves the
journal, and the next run of the stage rolls it back before it starts, so DVC and the next
stage never see new metrics beside old plots. Leftover twins of dead runs (staging,
replaced, discarded) carry no process id and are removed at the next start. A lock file,
held while the stage runs, keeps two runs of one stage from staging into the same twins.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from tasks.core import interrupt
from tasks.core.errors import UserError
from tasks.core.failpoints import failpoint

STAGED, REPLACED, DISCARDED = "staged", "replaced", "discarded"


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def twin(target: Path, role: str) -> Path:
    """A hidden sibling of `target` (same directory, so renames between them are atomic)."""
    return target.with_name(f".{target.name}.{role}")


def temporary_twin(target: Path) -> Path:
    return twin(target, STAGED)


def journal_path(targets: Sequence[Path]) -> Path:
    return twin(Path(targets[0]), "publish.json")


@dataclass
class Entry:
    target: str
    had_old: bool


def _write_journal(path: Path, entries: list[Entry]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump({"entries": [asdict(e) for e in entries]}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _roll_back(entries: list[Entry]) -> None:
    """Undo a swap that did not reach its commit point. Idempotent: a kill during the roll-back
    leaves a state this function completes on the next call."""
    for entry in reversed(entries):
        target = Path(entry.target)
        replaced, discarded, staged = twin(target, REPLACED), twin(target, DISCARDED), twin(target, STAGED)
        if entry.had_old:
            if replaced.exists() or replaced.is_symlink():   # the old version was moved aside
                if target.exists() or target.is_symlink():   # ... and the new one put in its place
                    remove(discarded)
                    os.replace(target, discarded)
                os.replace(replaced, target)
        elif (target.exists() or target.is_symlink()) and not staged.exists():
            remove(discarded)
            os.replace(target, discarded)                     # a new output where there was none
        remove(discarded)
        remove(staged)


def recover(targets: Sequence[Path]) -> bool:
    """Before a stage starts: roll back a publish a dead run left unfinished, then clear the
    twins dead runs left behind. True if a publish was rolled back."""
    journal = journal_path(targets)
    rolled_back = False
    if journal.is_file():
        try:
            entries = [Entry(**e) for e in json.loads(journal.read_text())["entries"]]
        except (ValueError, KeyError, TypeError):
            entries = []  # a torn journal: written before any output moved
        _roll_back(entries)
        rolled_back = bool(entries)
    remove(journal)
    remove(journal.with_name(journal.name + ".tmp"))
    for target in map(Path, targets):
        for role in (STAGED, REPLACED, DISCARDED):
            remove(twin(target, role))
        # twins named by process id, from before publishing had a journal
        for leftover in target.parent.glob(f".{target.name}.tmp-*"):
            remove(leftover)
    return rolled_back


def _swap(entries: list[Entry]) -> None:
    for i, entry in enumerate(entries):
        target = Path(entry.target)
        if entry.had_old:
            os.replace(target, twin(target, REPLACED))
            failpoint(f"publish.replaced.{i}")
        os.replace(twin(target, STAGED), target)
        failpoint(f"publish.swapped.{i}")


def publish(targets: Sequence[Path]) -> None:
    """Swap every staged twin in for its target, all or none (see the module docstring)."""
    targets = [Path(t) for t in targets]
    for target in targets:
        if not temporary_twin(target).exists():
            raise RuntimeError(f"the stage did not write its output {target}")
    entries = [Entry(str(t), t.exists() or t.is_symlink()) for t in targets]
    journal = journal_path(targets)
    # Signals wait until the swap is whole: a stage never stops half-published.
    with interrupt.deferred():
        failpoint("publish.before_journal")
        _write_journal(journal, entries)
        failpoint("publish.journal_written")
        try:
            _swap(entries)
            failpoint("publish.before_commit")
        except BaseException:
            _roll_back(entries)
            remove(journal)
            raise
        journal.unlink()                                       # the commit point
        failpoint("publish.committed")
    for target in targets:
        try:
            remove(twin(target, REPLACED))
        except OSError as err:  # published all the same; the next start clears it
            print(f"warning: could not delete the previous {target}: {err}", file=sys.stderr)


@contextmanager
def stage_lock(targets: Sequence[Path]) -> Iterator[None]:
    """One run at a time may stage into these twins (a dead run's lock dies with it)."""
    lock = twin(Path(targets[0]), "lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                f.seek(0)
                raise UserError(f"{targets[0]}: another run of this stage is writing it "
                                f"(process {f.read().strip() or '?'}); wait for it or stop it") from None
            raise
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            # Removed while still held: a run that opened it meanwhile fails its LOCK_NB and
            # says so; one that comes later makes a new one. Nothing is left beside the outputs.
            lock.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def atomic_outputs(*targets: Path) -> Iterator[list[Path]]:
    """Yield staging paths for `targets`; publish them all together only if the block succeeds.

    On any error (a signal included) the staging twins are deleted and the previous outputs
    stay as they were, so nothing half-written looks finished to DVC or to the next stage.
    """
    targets_ = [Path(t) for t in targets]
    with stage_lock(targets_):
        if recover(targets_):
            print(f"note: rolled back an unfinished publish of {targets_[0]} left by an earlier run",
                  file=sys.stderr)
        staged = [temporary_twin(t) for t in targets_]
        for target in targets_:
            target.parent.mkdir(parents=True, exist_ok=True)
        try:
            failpoint("stage.staging")
            yield staged
            publish(targets_)
        except BaseException:
            for path in staged:
                remove(path)
            raise
