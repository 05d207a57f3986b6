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


EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_INTERNAL = GraderError.exit_code
