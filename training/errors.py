"""The two ways a training run fails, each mapped to one exit code by `training.cli.main`."""


class InputError(Exception):
    """Bad input (flags, data file, data values): exit code 2, nothing written.

    The message is one line that names the problem, e.g. "CSV data.csv line 7 column 'x3': 'abc' is not a
    number".
    """


class TrainingFailed(Exception):
    """A run with valid input that could not finish (diverged, checkpoint not writable): exit code 1."""
