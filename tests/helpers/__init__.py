"""Shared test fixtures and slow references (no test imports another test)."""
