"""release capability."""
