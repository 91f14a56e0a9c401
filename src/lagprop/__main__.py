"""``python -m lagprop`` (and ``torchrun -m lagprop``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
