"""VLMGuard."""
