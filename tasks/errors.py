"""User-facing errors: one line that names the key, file or value at fault, exit code 2.

A stage raises `UserError` for anything the user can fix (params, input folders, data).
`run_stage_main` turns it into a single line on stderr and exit status 2, so a typo in
params.yaml never produces a traceback wall, while real bugs still show their traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A mistake in the user's params or inputs (not a bug in subjectlab)."""


class ParamsError(UserError):
    """params.yaml does not validate."""


class InputDataError(UserError):
    """An input folder or file (subjects, scenes, images, masks) is missing or invalid."""


def run_stage_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage entry point; report user mistakes in one line and exit 2."""
    # Imported here so that reading params never pays for importing torch.
    from lightning_modules.training import NonFiniteLossError

    try:
        main(argv)
    except (UserError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
