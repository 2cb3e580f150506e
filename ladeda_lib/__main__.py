"""``python -m ladeda_lib`` runs the ``ladeda`` command line."""

import sys

from ladeda_lib.cli import main

sys.exit(main())
