"""``python -m mmlab``: the same as the ``mmlab`` command."""

import sys

from mmlab.cli import main

sys.exit(main())
