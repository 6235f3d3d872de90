"""Allow ``python -m control_plane.cli``."""

import sys

from control_plane.cli.main import main

sys.exit(main())
