"""Synthetic tasks with known answers and planted reasoning styles (`arithmetic.py`)."""
