"""User-facing errors: the CLI prints these as one line and exits non-zero, no traceback."""


class LmlabError(Exception):
    """A problem with the user's input (config, files, checkpoint), not a bug in lmlab."""


class ConfigError(LmlabError):
    """A config file or override that does not validate."""
