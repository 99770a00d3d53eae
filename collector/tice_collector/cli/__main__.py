"""`python -m tice_collector.cli`: the tice-collector command (workers, tests and benches start it so)."""

import sys

from tice_collector.cli import main

sys.exit(main())
