"""The command-line tools (`tfattack-attack`, `tfattack-evaluate`, ...) and their shared entry point: flags parsed,
user errors as one line, Ctrl-C as one line, TensorFlow's start-up noise hidden unless --verbose.

    def main():
        cli.main("attack.py", run)      # run() -> exit code (0 if it returns None)

One console command per tool rather than one `tfattack` command with subcommands: absl flags are process-global,
so a process that defines only its tool's flags gives exact --help/--helpfull and rejects the other tools' flags.

Exit codes: 0 done; 2 bad input (unknown or malformed flag, positional arguments, any `UserError`:
said in one line before any long work where it can be known then); 1 an operating-system failure
while working (full disk, a file that vanished), said in one line with the path; 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

from absl import app, flags

from tfattack.errors import UserError


def start_tensorflow_quietly(verbose: bool) -> None:
    """Imports TensorFlow with its C++ start-up lines (CUDA probing on CPU-only machines, CPU-feature and oneDNN
    notices, written straight to file descriptor 2 before any log level applies) sent to /dev/null, and keeps its
    later INFO lines off; warnings and errors after start-up still show. `verbose` leaves everything as it is."""
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        tf.config.list_physical_devices()  # the CUDA probe happens here, still inside the redirect
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# The tools' modules import TensorFlow while defining their flags, before absl parses argv: this package's import
# is the one point that runs first, so the --verbose check reads argv directly.
start_tensorflow_quietly(verbose=any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in sys.argv[1:]))

flags.DEFINE_boolean("verbose", False, "Show TensorFlow's start-up and INFO log lines (hidden by default).")


def program(default: str) -> str:
    """The name a message starts with: the command as typed (`tfattack-attack`, `attack.py`), else `default`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "__main__.py") else default

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


def _show_in_help(tool_module: str) -> None:
    """absl's --help lists the key flags of the module named by argv[0] (a console script or scripts/ wrapper, which
    defines none): the tool module's key flags, and --verbose, are declared key flags of that name too."""
    if not sys.argv:
        return
    for flag in flags.FLAGS.get_key_flags_for_module(tool_module) + [flags.FLAGS["verbose"]]:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def main(script: str, run: Callable[[], Optional[int]], interrupted_note: str = "") -> None:
    """absl's app.run around `run`, with the exit codes above; messages start with `program(script)`."""
    script = program(script)
    _show_in_help(run.__module__)

    def entry(argv):
        if len(argv) > 1:
            return error(script, f"unexpected arguments {' '.join(argv[1:])} (flags are --name=value)")
        return run_guarded(script, run, interrupted_note)

    app.run(entry, flags_parser=_parse_flags(script))
