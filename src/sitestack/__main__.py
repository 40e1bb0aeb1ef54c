from __future__ import annotations

import sys

from sitestack.cli import main

sys.exit(main())
