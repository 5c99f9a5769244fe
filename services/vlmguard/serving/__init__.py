"""Hosting around the core: the Redis stage worker (:mod:`vlmguard.serving.worker`), Ray Serve
(:mod:`vlmguard.serving.ray_app`) and the Triton model repository of the target.

Nothing here is imported by the core (domain, stages, queue, pipeline); each submodule imports its
own optional dependency (``vlmguard[ray]``, ``vlmguard[triton]``) lazily.
"""
