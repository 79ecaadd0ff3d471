"""The engine: the only place torch runs a model. Executors (one fixed execution shape of C rows), the
batcher that feeds them, numerics pinning and fingerprints, C calibration.

This __init__ imports nothing: the CLI reads `numerics_env` before torch may be imported."""
