"""Positions (funded posts under signed agreements) and assignments (a counsellor holding a position)."""
