"""Old path of the command line, kept for one release: use :mod:`cardioinr.app.cli` (or ``python -m cardioinr``)."""

import sys

from cardioinr.app.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
