"""``python -m nsm`` is the ``nsm`` command."""

import sys

from .cli import main

sys.exit(main())
