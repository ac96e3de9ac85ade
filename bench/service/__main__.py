"""``python -m bench.service``: see :mod:`bench.service.cli`."""

import sys

from bench.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
