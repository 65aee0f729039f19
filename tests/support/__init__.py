"""Helpers shared by unit and integration tests (not tests themselves)."""
