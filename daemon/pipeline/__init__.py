"""Bars -> regime, features and delayed labels: pure computation, no I/O."""
