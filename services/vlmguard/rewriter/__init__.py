"""Rewriting: the template rewriter, the tier-2 generative rewriter, its output format and its
backends."""
