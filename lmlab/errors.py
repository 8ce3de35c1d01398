"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""


class LmlabError(Exception):
    """A problem with the user's input (config, files, checkpoint), not a bug in lmlab."""


class ConfigError(LmlabError):
    """A config file or override that does not validate."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal: the message says where it stopped and how to resume, and the
    command exits ``128 + signum`` (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""

    def __init__(self, message: str = "", signum: int = 2):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
