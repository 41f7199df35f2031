"""`python -m jppo` is the `jppo` command."""

import sys

from jppo.cli import main

sys.exit(main())
