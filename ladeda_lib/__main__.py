"""``python -m ladeda_lib`` runs the ``ladeda`` command line."""

import sys

from ladeda_lib.cli import main

if __name__ == "__main__":  # a spawned process (the pipeline's second trainer) imports this module too
    sys.exit(main())
