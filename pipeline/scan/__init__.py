"""scan capability."""
