"""Agreements between the State and territories, and their amendments (avenants)."""
