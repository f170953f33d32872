"""`python -m bridge` runs the same command line as `responses-bridge`."""

import sys

from bridge.cli import main

sys.exit(main())
