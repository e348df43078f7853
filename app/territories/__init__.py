"""Territories: régions, départements, métropoles, EPCI and communes, as one tree."""
