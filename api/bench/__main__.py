"""``python -m api.bench``: see :mod:`api.bench.cli`."""

import sys

from api.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
