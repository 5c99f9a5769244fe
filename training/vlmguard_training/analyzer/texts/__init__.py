"""Generators of the tier-1 head's own training texts, each family with both its labels."""
