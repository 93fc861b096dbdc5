"""``python -m isheep.runtime.cli``: the same as the ``isheep`` command."""

import sys

from .main import main

sys.exit(main())
