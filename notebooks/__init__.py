"""The explore notebooks, shipped as package data of `omni_lab.notebooks` (`omni-lab notebooks DIR` copies them)."""
