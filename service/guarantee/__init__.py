"""The guarantee: inference-mode checks on a loaded model, the invariance probe, and the start-up self-test
that must pass before a version serves (and its HTTP client twin for deployed servers)."""
