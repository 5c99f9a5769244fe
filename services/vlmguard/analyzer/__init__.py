"""Tier 1: the fast threat analyzer and the models it runs."""
