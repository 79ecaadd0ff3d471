"""`python -m training`: same entry point as the `invariant-train` console script."""

import sys

from training.cli import main

sys.exit(main())
