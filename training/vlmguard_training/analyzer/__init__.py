"""Training of the tier-1 analyzer: encoder adapter and risk head."""
