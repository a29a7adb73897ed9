"""``python -m rnafm_sklearn`` is the ``rnafm-embed`` command line."""

import sys

from ._cli import main

sys.exit(main())
