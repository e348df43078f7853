"""Counsellors (personal data) and their HR synchronisation by external reference."""
