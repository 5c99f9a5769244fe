"""scripts/make_samples.py draws the quickstart's images; the committed files are its output."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_samples",
                                                  ROOT / "scripts" / "make_samples.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_samples_are_what_the_script_draws(tmp_path: Path) -> None:
    mod = _module()
    written = mod.write_samples(tmp_path)
    assert sorted(p.name for p in written) == ["chart.png", "typographic_list.png"]
    for path in written:
        drawn = np.asarray(Image.open(path).convert("RGB"))
        committed = np.asarray(Image.open(ROOT / "examples" / path.name).convert("RGB"))
        assert drawn.shape == committed.shape, path.name
        assert np.array_equal(drawn, committed), (
            f"examples/{path.name} is stale: run `python scripts/make_samples.py`")


def test_samples_hold_ink_where_text_is_drawn() -> None:
    """Each image has dark text pixels on a white page (not blank, not all ink)."""
    mod = _module()
    for draw in mod.SAMPLES.values():
        gray = np.asarray(draw().convert("L"))
        dark = float((gray < 100).mean())
        assert 0.005 < dark < 0.5
