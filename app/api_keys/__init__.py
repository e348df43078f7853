"""API keys: who calls, with which role, over which territories."""
