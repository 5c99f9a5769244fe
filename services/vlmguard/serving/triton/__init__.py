"""The target VLM on NVIDIA Triton: model repository template (``target_vlm``), repository
writer (:mod:`.repository`) and a ``tritonserver`` launcher (:mod:`.launch`)."""
