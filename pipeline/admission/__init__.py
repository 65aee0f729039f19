"""admission capability."""
