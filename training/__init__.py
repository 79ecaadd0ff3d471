"""Training for invariant-serve: `python -m training` (console script `invariant-train`).

Trains an MLP or CNN from `models/` on digits, synthetic data or a CSV file and writes the next checkpoint
version through `models.checkpoint.save_checkpoint`.
"""

from training.errors import InputError, TrainingFailed

__all__ = ["InputError", "TrainingFailed"]
