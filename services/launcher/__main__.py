"""`python -m services.launcher` (what `make run` runs): the whole stack, supervised."""

import sys

from services.launcher.stack import main

sys.exit(main())
