"""Refresh the ``config`` part of helm/vlmguard/values.schema.json from the pydantic models.

The chart's own keys are written by hand in values.schema.json; ``properties.config`` and the
``$defs`` it refers to are generated here from :class:`vlmguard.config.VLMGuardConfig`, minus
the keys the chart owns (listen addresses, auth, TLS, metrics, the queue URL), so the chart
accepts exactly the configuration the service accepts. ``tests/integration/test_chart.py``
fails when the committed schema is stale. Usage: ``.venv/bin/python scripts/gen_chart_schema.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "helm" / "vlmguard" / "values.schema.json"

#: Config keys set by the chart's templates, never by ``.Values.config`` (model, field).
CHART_OWNED: dict[str, tuple[str, ...]] = {
    "VLMGuardConfig": ("metrics",),
    "ServerConfig": ("listen", "tls", "auth"),
    "QueueConfig": ("url", "password_env", "tls_ca_file"),
    "HTTPConfig": ("listen",),  # frontDoor.* (the front-door pods get --http)
}
#: Models only reachable through chart-owned keys.
UNUSED_DEFS = ("AuthConfig", "TLSConfig", "MetricsConfig")


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items()
                if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def config_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of ``config``, its ``$defs``) from the pydantic models."""
    sys.path.insert(0, str(ROOT / "services"))
    from vlmguard.config import VLMGuardConfig

    full = _strip_titles(VLMGuardConfig.model_json_schema())
    defs: dict[str, Any] = full.pop("$defs")
    for name in UNUSED_DEFS:
        defs.pop(name, None)
    for model, fields in CHART_OWNED.items():
        target = full if model == "VLMGuardConfig" else defs[model]
        for field in fields:
            target["properties"].pop(field, None)
    # The taxonomy default (every category) is long and not useful in a values schema.
    for d in defs.values():
        for prop in d.get("properties", {}).values():
            if isinstance(prop.get("default"), (list, dict)):
                prop.pop("default")
    full["description"] = ("VLMGuard configuration written to the ConfigMap (generated from "
                           "vlmguard.config by scripts/gen_chart_schema.py).")
    return full, defs


def render(current: dict[str, Any]) -> str:
    """values.schema.json text with a fresh config part."""
    cfg, defs = config_schema()
    out = dict(current)
    out["properties"] = dict(current["properties"])
    out["properties"]["config"] = cfg
    keep = {k: v for k, v in current.get("$defs", {}).items() if k.startswith("k8s")}
    out["$defs"] = {**keep, **dict(sorted(defs.items()))}
    return json.dumps(out, indent=2) + "\n"


def main() -> int:
    SCHEMA.write_text(render(json.loads(SCHEMA.read_text())))
    print(f"wrote {SCHEMA.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
