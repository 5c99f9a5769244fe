"""``vlmguard redteam``: the project's own red-team command.

Seed requests (the project's development split, or a user's manifest) are rewritten by a
registry of documented attack transforms (:mod:`.transforms`, :mod:`.images`, machine
translation in :mod:`.translate`), sent through the guard in process or over gRPC (the
evaluation's guards), and measured (:mod:`.stats`): attack success rate per transform, family,
category and language with 95% Wilson intervals, benign over-refusal under the same
transforms, and a CI gate. See docs/redteam.md.
"""
