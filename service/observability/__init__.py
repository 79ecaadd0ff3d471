"""Prometheus metrics (one `Metrics` per app, multiprocess-aware) and process introspection; imports nothing
else from the service."""
