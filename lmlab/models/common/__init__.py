"""Layers shared by more than one family: norms, positions, attention, MLPs."""
