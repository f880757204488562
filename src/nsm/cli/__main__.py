"""``python -m nsm.cli`` is the ``nsm`` command, as it was when the command was one module."""

import sys

from . import main

sys.exit(main())
