"""Setup mistakes: each error knows its exit code and prints as one line.

Student mistakes never raise these; they become data in the report.
"""


class GraderError(Exception):
    exit_code = 70  # EX_SOFTWARE: a bug of ours, not the user's

    def format_message(self) -> str:
        return f"error: {self}"


class UsageError(GraderError):
    exit_code = 2


class ConfigError(GraderError):
    exit_code = 3

    def format_message(self) -> str:
        return f"assignment config error: {self}"


class EnvironmentUnavailable(GraderError):
    """The machine cannot do what was asked (e.g. --device cuda without CUDA)."""

    exit_code = 4


class OutputUnusable(GraderError):
    """An output cannot be written where it was asked for: a folder where a file goes, a file
    where a folder goes, no permission. Checked before any grading (outputs.py), so an hour of
    grading is never lost to a typo in -o."""

    exit_code = 73  # EX_CANTCREAT


class WriteFailed(GraderError):
    """Writing an output failed once the checks had passed, for a reason outside the grader: the
    disk is full (ENOSPC), the quota is spent, an I/O error. Finished reports are kept."""

    exit_code = 74  # EX_IOERR


EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_INTERNAL = GraderError.exit_code
