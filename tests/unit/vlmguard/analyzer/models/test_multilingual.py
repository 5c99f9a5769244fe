"""The multilingual embedder (USE m3) and language identification (py3langid), with the real
packages, and the loader of the multilingual head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlmguard.analyzer.models.multilingual import (
    FOREIGN_BELOW,
    SUPPORTED_LANGUAGES,
    UNDETERMINED,
    LanguageGuess,
    LanguageIdentifier,
    USEEmbedder,
    load_multilingual,
    multilingual_head_dir,
)
from vlmguard.analyzer.models.risk_head import RiskHead
from vlmguard.config import AnalyzerConfig, TaxonomyConfig
from vlmguard.errors import ConfigError


@pytest.fixture(scope="module")
def use() -> USEEmbedder:
    return USEEmbedder(threads=1)


@pytest.fixture(scope="module")
def lid() -> LanguageIdentifier:
    return LanguageIdentifier()


def test_use_embeds_unit_rows(use: USEEmbedder) -> None:
    x = use.embed(["How do I bake bread?", "", "Wie backe ich Brot?"])
    assert x.shape == (3, use.dim) == (3, 512) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    assert use.embed([]).shape == (0, 512)
    assert use.name.startswith("use-m3")


def test_use_aligns_translations(use: USEEmbedder) -> None:
    en, fr, ja, other = use.embed([
        "Where is the nearest train station?",
        "Où se trouve la gare la plus proche ?",
        "最寄りの駅はどこですか？",
        "My cat likes to sleep on the sofa all afternoon.",
    ])
    assert float(en @ fr) > float(en @ other) + 0.3
    assert float(en @ ja) > float(en @ other) + 0.3


def test_use_reads_long_text_to_the_end(use: USEEmbedder) -> None:
    """No token limit: a change at the very end of a 20,000-character text changes the vector
    (a little: the pooling averages over every token, hence the caller's windows)."""
    pad = "The garden was quiet and the afternoon was warm. " * 400
    a, b = use.embed([pad + "We planted tomatoes.", pad + "Nous avons planté des tomates."])
    assert len(pad) > 19_000
    assert not np.allclose(a, b, atol=1e-6)
    assert float(a @ b) > 0.99


@pytest.mark.parametrize("text", ["12345 678", "😀😀😀 🎉", "ok", "3.14 * (2 + 7) = ?",
                                  "h4x0r 1337 !!", ""])
def test_too_few_letters_is_undetermined(lid: LanguageIdentifier, text: str) -> None:
    g = lid.identify(text)
    assert g.lang == UNDETERMINED and g.supported and g.confidence == 0.0


@pytest.mark.parametrize("text", ["hello", "thanks a lot!!", "def f(x): return x + 1",
                                  "h0w d0 1 m4k3 bread", "What breed is this dog?",
                                  "Ｗｈａｔ ｉｓ ｔｈｉｓ ｄｏｇ？"])
def test_short_or_odd_latin_text_defaults_to_english(lid: LanguageIdentifier, text: str) -> None:
    g = lid.identify(text)
    assert g.lang == "en" and g.supported


def test_maybe_foreign() -> None:
    assert LanguageGuess("fr", 0.9, True).maybe_foreign
    assert LanguageGuess("hi", 0.9, False).maybe_foreign
    assert not LanguageGuess("en", 0.9, True).maybe_foreign
    assert not LanguageGuess("und", 0.0, True).maybe_foreign
    # English only because no other language reached the Latin threshold, and not English-like.
    assert LanguageGuess("en", FOREIGN_BELOW / 2, True).maybe_foreign


@pytest.mark.parametrize(("text", "lang"), [
    ("Comment puis-je faire cuire du pain à la maison ?", "fr"),
    ("Wie backe ich zu Hause Brot?", "de"),
    ("¿Cómo puedo hornear pan en casa?", "es"),
    ("我怎样才能在家里烤面包？", "zh"),
    ("家でパンを焼くにはどうすればいいですか？", "ja"),
    ("집에서 빵을 어떻게 구울 수 있나요?", "ko"),
    ("Как испечь хлеб дома?", "ru"),
    ("كيف يمكنني خبز الخبز في المنزل؟", "ar"),
    ("ฉันจะอบขนมปังที่บ้านได้อย่างไร", "th"),
])
def test_supported_languages(lid: LanguageIdentifier, text: str, lang: str) -> None:
    g = lid.identify(text)
    assert (g.lang, g.supported) == (lang, True) and g.confidence > 0.5
    assert lang in SUPPORTED_LANGUAGES


@pytest.mark.parametrize(("text", "lang"), [
    ("मैं घर पर रोटी कैसे बना सकता हूँ?", "hi"),
    ("Làm thế nào để tôi nướng bánh mì ở nhà?", "vi"),
])
def test_unsupported_languages(lid: LanguageIdentifier, text: str, lang: str) -> None:
    g = lid.identify(text)
    assert (g.lang, g.supported) == (lang, False)


def _use_head(path: Path, dim: int = 512, embedder: str = "use-m3@test") -> None:
    cats = TaxonomyConfig().ids
    rng = np.random.default_rng(0)
    RiskHead(cats, rng.normal(size=dim), 0.0, rng.normal(size=(dim, len(cats))),
             np.zeros(len(cats)), version="t", meta={"embedder": embedder}).save(path)


def test_load_multilingual(tmp_path: Path) -> None:
    assert load_multilingual(AnalyzerConfig(multilingual=False)) is None
    _use_head(tmp_path / "ok")
    loaded = load_multilingual(AnalyzerConfig(multilingual_head_path=str(tmp_path / "ok"),
                                              threads=1), TaxonomyConfig().ids)
    assert loaded is not None
    embedder, head, lid = loaded
    p, pc = head.predict(embedder.embed(["hello", "bonjour"]))
    assert p.shape == (2,) and pc.shape == (2, len(head.categories))
    assert lid.identify("Bonjour, comment allez-vous aujourd'hui ?").lang == "fr"


def test_load_multilingual_refuses_other_heads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_multilingual(AnalyzerConfig(multilingual_head_path=str(tmp_path / "missing")))
    _use_head(tmp_path / "minilm", dim=384, embedder="all-MiniLM-L6-v2")
    with pytest.raises(ConfigError, match="not USE multilingual"):
        load_multilingual(AnalyzerConfig(multilingual_head_path=str(tmp_path / "minilm")))


def test_shipped_head_is_the_default() -> None:
    assert multilingual_head_dir("") == multilingual_head_dir() != Path("")
    assert multilingual_head_dir("") != multilingual_head_dir("/elsewhere")
    if not (multilingual_head_dir() / "weights.npz").is_file():
        pytest.skip("no multilingual head shipped in this checkout")
    loaded = load_multilingual(AnalyzerConfig(threads=1), TaxonomyConfig().ids)
    assert loaded is not None and loaded[1].dim == 512
