"""`python -m devstack.launcher` (what `make run` runs): the whole stack, supervised."""

import sys

from devstack.launcher.stack import main

sys.exit(main())
