"""The one base class of mistakes a user can fix: bad flags, files, folders, settings.

Scripts print a `UserError` as one line (`script.py: error: ...`) and exit with code 2 (`tfattack.cli`);
anything else is a bug and keeps its traceback. Library code raises the subclass of its own module
(`runs.UsageError`, `data.DataError`, `defenses.DefenseError`, ...), each a `UserError` and a `ValueError`.
"""


class UserError(ValueError):
    """Input the user can correct; the message says what is wrong and where (file, flag, variable), in one line."""
