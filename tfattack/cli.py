"""The scripts' shared entry point: flags parsed, user errors as one line, Ctrl-C as one line.

    if __name__ == "__main__":
        cli.main("attack.py", run)      # run() -> exit code (0 if it returns None)

Exit codes: 0 done; 2 bad input (unknown or malformed flag, positional arguments, any `UserError`:
said in one line before any long work where it can be known then); 1 an operating-system failure
while working (full disk, a file that vanished), said in one line with the path; 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Callable, Optional

from absl import app, flags

from tfattack.errors import UserError

EXIT_USAGE = 2
EXIT_OS = 1
EXIT_INTERRUPTED = 130


def say(script: str, message: str) -> None:
    print(f"{script}: {message}", file=sys.stderr)


def error(script: str, message: str, code: int = EXIT_USAGE) -> int:
    say(script, "error: " + " ".join(str(message).split()))
    return code


def _os_error_text(err: OSError) -> str:
    where = err.filename if err.filename is not None else ""
    reason = err.strerror or str(err)
    return f"{reason}: {where}" if where else reason


def run_guarded(script: str, run: Callable[[], Optional[int]], interrupted_note: str = "") -> int:
    """Runs `run()`, mapping user errors, OS errors and Ctrl-C to one line and an exit code."""
    try:
        code = run()
    except UserError as err:
        return error(script, str(err))
    except KeyboardInterrupt:
        return error(script, "interrupted" + (f"; {interrupted_note}" if interrupted_note else ""),
                     EXIT_INTERRUPTED)
    except OSError as err:
        return error(script, _os_error_text(err), EXIT_OS)
    return 0 if code is None else int(code)


def _parse_flags(script: str):
    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as err:
            # absl prints the whole usage and exits 1; the README promises one line and 2.
            sys.exit(error(script, f"{err} (see --helpfull)"))
    return parse


def main(script: str, run: Callable[[], Optional[int]], interrupted_note: str = "") -> None:
    """absl's app.run around `run`, with the exit codes above."""

    def entry(argv):
        if len(argv) > 1:
            return error(script, f"unexpected arguments {' '.join(argv[1:])} (flags are --name=value)")
        return run_guarded(script, run, interrupted_note)

    app.run(entry, flags_parser=_parse_flags(script))
