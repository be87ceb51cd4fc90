"""``python -m testhost ...`` (with test/ on sys.path) or ``python test/testhost ...``."""

import sys
from pathlib import Path

if not __package__:  # run as a directory: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from testhost.cli import main

sys.exit(main())
