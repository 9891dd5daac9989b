from __future__ import annotations

import sys

from daemon.cli.main import main

if __name__ == "__main__":  # not when a spawned child process imports it
    sys.exit(main())
