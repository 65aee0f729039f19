"""sealing capability."""
