"""Shared test fixtures and slow references (no test imports another test)."""

from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])
"""The checkout the tests run from."""
