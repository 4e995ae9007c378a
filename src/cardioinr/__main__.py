"""``python -m cardioinr``: the command line (also under torchrun: ``torchrun ... -m cardioinr train-prior``)."""

import sys

from cardioinr.app.cli import main

sys.exit(main())
