"""The synthetic corpus: prepare.py generates and writes it."""
