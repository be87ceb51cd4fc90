"""``python -m formula_check``: see :mod:`formula_check.cli`."""

import sys

from formula_check.cli import main

sys.exit(main())
