"""How a stage ends on an error the user can fix: its message and exit code 1, no Python traceback.

Each entry point runs `run(main, *errors)` with the error types of its own work (a bad file, a
damaged checkpoint...) on top of the ones every stage shares (params.yaml and the dataset). Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from stages.core.params import ParamsError
from stages.core.problems import DatasetError

USER_ERROR_EXIT = 1


def run(main: Callable[[], None], *user_errors: type[BaseException]) -> None:
    try:
        main()
    except (ParamsError, DatasetError, *user_errors) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None
