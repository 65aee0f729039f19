"""signing capability."""
