"""`python -m worker ...` is the `terraseg` command."""

import sys

from worker.cli import main

sys.exit(main())
