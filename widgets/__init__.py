"""Notebook widgets and plotly figure builders for omni-lab runs (see DESIGN.md)."""
