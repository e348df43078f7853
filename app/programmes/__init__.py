"""Programmes: funding envelopes with a positions target, a budget and a subsidy per position."""
