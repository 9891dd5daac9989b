"""Rendering: SVG plots, the retrain and evaluation reports, progress output."""
