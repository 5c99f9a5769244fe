"""The target VLM: the backend protocol and its backends."""
