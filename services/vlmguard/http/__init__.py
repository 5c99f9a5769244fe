"""The OpenAI-compatible HTTP front door: ``POST /v1/chat/completions`` guarded, then forwarded
to the OpenAI-compatible server of ``target.openai`` (docs/front_door.md).

Needs the ``http`` extra (Starlette/FastAPI, uvicorn, httpx): without it, importing the package
raises CONFIG_INVALID/MISSING_DEPENDENCY with the install command instead of an ImportError.
"""

from __future__ import annotations

try:
    import httpx  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the installed extras
    from vlmguard.errors import ConfigError, Reason

    raise ConfigError(f"the HTTP front door needs {e.name}; install it with: "
                      "pip install 'vlmguard[http]'", reason=Reason.MISSING_DEPENDENCY) from e
