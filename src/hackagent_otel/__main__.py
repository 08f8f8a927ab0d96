"""``python -m hackagent_otel``: the ``hackagent-otel`` command."""

import sys

from hackagent_otel._cli import main

sys.exit(main())
