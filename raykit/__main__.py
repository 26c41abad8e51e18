"""``python -m raykit ...``: the ``raykit`` command, for where only a Python is at hand
(``ray job submit --working-dir . -- python -m raykit train my.yaml``)."""

import sys

from raykit.cli import main

if __name__ == "__main__":
    sys.exit(main())
