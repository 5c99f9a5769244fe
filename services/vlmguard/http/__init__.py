"""The OpenAI-compatible HTTP front door: ``POST /v1/chat/completions`` guarded, then forwarded
to the OpenAI-compatible server of ``target.openai`` (docs/front_door.md)."""
