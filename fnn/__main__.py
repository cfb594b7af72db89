"""``python -m fnn train ...``: the same as the ``fnn`` console script."""

import sys

from fnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
