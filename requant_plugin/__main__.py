"""``python -m requant_plugin`` runs the ``requant`` command line."""

import sys

from .cli import main

sys.exit(main())
