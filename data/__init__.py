"""Data sets, one folder each with its prepare.py (importable as data.<set>.prepare)."""
