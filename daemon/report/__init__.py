"""Rendering: SVG plots, the retrain and evaluation reports, progress output.

The public names are its modules, imported where they are needed: importing the package loads
none of them, so a process that needs one small module does not load the libraries of the others.
"""

from __future__ import annotations

__all__ = ["evaluation", "progress", "retrain_html", "retrain_plots", "retrain_text", "svg"]
