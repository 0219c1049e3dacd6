"""``python -m sessdb`` runs the command line."""

import sys

from sessdb.cli import main

sys.exit(main())
