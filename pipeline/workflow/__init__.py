"""workflow capability."""
