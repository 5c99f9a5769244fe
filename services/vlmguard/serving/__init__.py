"""Hosting layers around the core: Ray Serve (:mod:`vlmguard.serving.ray_app`) and Triton.

Nothing here is imported by the core (domain, roles, queue, pipeline); each submodule imports
its own optional dependency (``vlmguard[ray]``, ``vlmguard[triton]``) lazily.
"""
