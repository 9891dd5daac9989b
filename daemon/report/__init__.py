"""Rendering: SVG plots, the retrain and evaluation reports, progress output.

Its public names are its modules (`retrain_html` and `evaluation` both have a `render_html`).
"""

from __future__ import annotations

__all__ = ["evaluation", "progress", "retrain_html", "retrain_plots", "retrain_text", "svg"]
