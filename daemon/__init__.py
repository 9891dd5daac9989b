"""regimed: label market regimes as bars arrive and keep models that remember crashes."""

from __future__ import annotations

from daemon.errors import ConfigError, DataError, RegimedError, UsageError

__all__ = ["ConfigError", "DataError", "RegimedError", "UsageError", "__version__"]
__version__ = "0.1.0"
