"""``python -m gradinv.cli ...``: the ``gradinv`` command without its console script."""

import sys

from gradinv.cli import main

sys.exit(main())
