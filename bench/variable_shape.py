"""Bench only: our server serving through the variable-shape executor (bench/variable_shape_executor.py), to
measure what the fixed shape costs. Not a setting: this script hands the server an executor factory, and
the model still has to pass its self-test with the real fixed-shape executor first.

    python bench/variable_shape.py --repository DIR --port N [any `python -m service` flag]
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from service.cli import main

    # Imported by name in each worker (bench/ is on the workers' path: they inherit this script's sys.path).
    main(sys.argv[1:], executor_factory="variable_shape_executor:variable_shape")
