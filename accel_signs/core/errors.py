"""The package's own exceptions. Only the CLI turns them into exit codes."""


class AccelSignsError(Exception):
    """Base class: a problem the user can fix, with a message that says what."""


class ConfigError(AccelSignsError):
    """An invalid option or combination of options."""


class DatasetError(AccelSignsError):
    """A data store or source that is missing, malformed or inconsistent."""


class CheckpointError(AccelSignsError):
    """A checkpoint that is missing, malformed or does not match its weights."""


class LaunchError(AccelSignsError):
    """The processes were started in a way that cannot train correctly."""


class TrainingError(AccelSignsError):
    """Training cannot go on (e.g. the loss became NaN)."""


class ExportError(AccelSignsError):
    """An exported model that does not reproduce the checkpoint's outputs."""


class Stopped(AccelSignsError):
    """The run was asked to stop (SIGTERM, SIGUSR1) and saved its state: resume it."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): try again later, which `--resume` does
