"""User-facing errors: one line that names the key, file or value at fault, exit code 2.

A stage raises `UserError` for anything the user can fix (params, input folders, data).
`run_stage_main` turns it into a single line on stderr and exit status 2, so a typo in
params.yaml never produces a traceback wall, while real bugs still show their traceback.
The science layer raises the same classes (lightning_modules.core.errors), so a reader of
a dataset folder or a diverging loss is reported the same way.
"""

from __future__ import annotations

import sys
from typing import Callable

from lightning_modules.core.errors import InputDataError, UserError

USER_ERROR_EXIT_CODE = 2

__all__ = ["InputDataError", "ParamsError", "TrackingError", "USER_ERROR_EXIT_CODE", "UserError", "run_stage_main"]


class ParamsError(UserError):
    """params.yaml does not validate."""


class TrackingError(UserError):
    """The MLflow store cannot be reached or stopped working (a server down, a deleted store)."""


def run_stage_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage entry point; report user mistakes in one line and exit 2, and a SIGTERM or
    SIGINT in one line and exit 143 or 130 (whatever the stage could keep, it has kept)."""
    from tasks.core import interrupt
    from tasks.core.quiet import silence_known_noise

    silence_known_noise()
    previous = interrupt.install()
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except interrupt.StageInterrupted as stop:
        stage = getattr(sys.modules.get(getattr(main, "__module__", "")), "STAGE", "subjectlab")
        kept = stop.detail or "no outputs published"
        print(f"{stage}: interrupted by {stop.name}; {kept}; run the stage again to continue",
              file=sys.stderr)
        sys.exit(stop.exit_code)
    finally:
        interrupt.restore(previous)
