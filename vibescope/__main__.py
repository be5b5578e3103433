"""``python -m vibescope``: the same as the ``vibescope`` command."""

import sys

from vibescope.server.cli import main

sys.exit(main())
