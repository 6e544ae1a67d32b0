"""``python -m l2o ...``: the ``l2o`` command (e.g. under ``torchrun -m l2o``)."""

import sys

from l2o.cli import main

sys.exit(main())
