"""``python -m bench.daemon``: see :mod:`bench.daemon`."""

import sys

from bench.daemon import main

sys.exit(main(sys.argv[1:]))
