"""How the flow entry points end: as the stages do, in one line.

A user mistake (a params file that does not validate, an unknown stage, a stage that refused
its input) is one `error:` line and exit 2; a stage that crashed is one line pointing at its
output, which the flow has already shown, and exit 1. Prefect logs a failed task or flow run
with its traceback; for failures phrased here that traceback says nothing new, so the console
shows the message alone (the Prefect UI keeps the details).
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from tasks.core.errors import USER_ERROR_EXIT_CODE, UserError
from tasks.core.quiet import silence_known_noise

INTERRUPTED_EXIT_CODE = 130


class StageFailed(RuntimeError):
    """A stage of the flow failed for another reason than a user mistake (its output says why)."""


class StageRefused(UserError):
    """A stage of the flow stopped on a user mistake; the message is the stage's own line."""


PHRASED = (UserError, StageFailed)


class _NoTracebackForPhrased(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PHRASED):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_phrased_tracebacks() -> None:
    """Drop the traceback Prefect attaches to its log line of a failure phrased here."""
    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if not any(isinstance(f, _NoTracebackForPhrased) for f in handler.filters):
                handler.addFilter(_NoTracebackForPhrased())


def run_flow_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a flow entry point; every way it can fail ends in one line on stderr."""
    silence_known_noise()
    quiet_phrased_tracebacks()
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
