"""The one root exception of regimed and its subclasses.

Every message names the offending key, file, row or value so that an operator can fix the
input without reading the code.
"""

from __future__ import annotations


class RegimedError(Exception):
    """Root of every error regimed raises on purpose."""


class ConfigError(RegimedError, ValueError):
    """A configuration file or environment override is invalid (exit code 2)."""


class DataError(RegimedError, ValueError):
    """Input data (a CSV file, a bar) is malformed; the message names file, row and column."""


class UsageError(RegimedError, ValueError):
    """A command was called with arguments that do not fit together (exit code 2)."""


class StoreError(RegimedError):
    """The SQLite store cannot be opened, migrated, read or written; the message names the file."""
