"""Named points where a test can make a stage fail or die, to prove what survives.

`SUBJECTLAB_FAILPOINTS="publish.swapped.0=kill,train.batch_end@3=sigterm"` makes the process
SIGKILL itself when it first reaches `publish.swapped.0`, and send itself SIGTERM the third
time it reaches `train.batch_end`. Actions: kill, raise (an OSError, as a failed rename or
write would), sigterm, sigint. Unset (always, outside tests) a failpoint costs one lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "SUBJECTLAB_FAILPOINTS"
_hits: Counter[str] = Counter()


class InjectedFault(OSError):
    """Raised at a failpoint set to `raise`."""


def reset() -> None:
    """Forget the hits so far (a test that sets failpoints in its own process)."""
    _hits.clear()


def _action(name: str, hit: int) -> str | None:
    for item in os.environ.get(ENV, "").split(","):
        point, _, action = item.partition("=")
        point, _, nth = point.partition("@")
        if point.strip() == name and int(nth or 1) == hit:
            return action.strip()
    return None


def failpoint(name: str) -> None:
    if ENV not in os.environ:
        return
    _hits[name] += 1
    action = _action(name, _hits[name])
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise InjectedFault(f"injected fault at {name}")
    elif action in ("sigterm", "sigint"):
        os.kill(os.getpid(), signal.SIGTERM if action == "sigterm" else signal.SIGINT)
