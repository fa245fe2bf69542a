"""`python -m concord.cli`: the same as the `concord` command."""

from __future__ import annotations

import sys

from concord.cli.main import main

sys.exit(main())
