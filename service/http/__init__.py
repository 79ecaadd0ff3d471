"""The HTTP server: the app factory, the one dispatcher (route table, keys, limits, errors, compression), the
protocol class uvicorn runs, and the API's description. The top floor: it wires the protocols' handlers to
the data plane and nothing below imports it."""
