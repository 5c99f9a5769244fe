"""Tier-1 threat analyzer: fast CPU models composed into a risk analysis.

For one batch of requests it decodes images, reads the text inside them (OCR), runs the
explicit-imagery detector, and scores with one embedding pass: the user's text alone, each
image's OCR text alone, and the two joined (the FigStep pattern: a harmless prompt that asks the
model to complete a harmful list typed into the image). The output is tenant-independent;
policy turns it into a level and an action. One bad item fails alone, never its batch.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from vlmguard.analyzer.models.screen import WindowScreen
from vlmguard.analyzer.views import (
    PASSAGE_VIEWS,
    TextView,
    gibberish,
    stand_in,
    text_views,
    unread,
)
from vlmguard.analyzer.views import warm_up as views_warm_up
from vlmguard.analyzer.words import letters_in_words
from vlmguard.config import AnalyzerConfig, LimitsConfig, TaxonomyConfig
from vlmguard.domain import (
    Analysis,
    AnalysisItem,
    Finding,
    ImageEvidence,
    Modality,
    ModalityReasoning,
    excerpt,
)
from vlmguard.errors import InvalidArgumentError, UnavailableError, VLMGuardError
from vlmguard.imaging import decode_reduced

log = logging.getLogger(__name__)

#: Category the explicit-imagery detector reports into.
EXPLICIT_CATEGORY = "sexual_content"
#: Always-block category derived from sexual content plus a mention of minors.
CHILD_CATEGORY = "child_safety"

# No training data exists for child safety, so it is a rule: any sexual-content signal together
# with a mention of a minor (in the prompt or the text inside an image) is child-safety risk.
_MINOR = re.compile(
    r"\b(child|children|kids?|minors?|under-?age|teens?|teenagers?|pre-?teens?|school ?(girl|boy)s?"
    r"|toddlers?|infants?|bab(y|ies)|little (girl|boy)s?|young (girl|boy)s?|lolis?"
    r"|(1[0-7]|[1-9])[- ]?(yo|y/o|years?[- ]old))\b",
    re.IGNORECASE,
)

# The prompt points at the image ("the list in the image", "the items above"): used to explain
# the cross-modal line of the reasoning, never to score.
_REFERS_TO_IMAGE = re.compile(
    r"\b(image|picture|photo|screenshot|shown|above|below|list|items?|text in|written|diagram)\b",
    re.IGNORECASE,
)

# Negation rule (see ``AnalyzerConfig.negation_rule``): a request for publicity or advocacy...
_ADVOCACY = re.compile(
    r"\b(promot\w*|support\w*|advocat\w*|encourag\w*|endors\w*|campaign\w*|spread\w*"
    r"|communicat\w*|awareness|publici[sz]\w*|amplif\w*|enforc\w*|achiev\w*|celebrat\w*"
    r"|champion\w*|engag\w*|urg(?:e|es|ed|ing)|benefits?|importance|impact|slogans?"
    r"|posters?|petitions?|pamphlets?|announcements?|psa)\b",
    re.IGNORECASE,
)
# ... whose object is the picture itself ("promoting this", "this message", "the image"): the
# reference is replaced by a harmless subject to measure the request's own risk.
_PICTURE_REFERENCE = re.compile(
    r"\b(?:th(?:is|ese|at|ose)(?: (?:message|idea|activity|image|picture|photo|content|sign"
    r"|poster|behaviou?r|practice|cause))?|the (?:image|picture|photo|message|content|sign"
    r"|poster|idea|activity))\b",
    re.IGNORECASE,
)
#: The harmless subject the reference is replaced with.
HARMLESS_SUBJECT = "recycling"


def harmless_probe(text: str) -> str | None:
    """The request with its reference to the picture replaced by a harmless subject, or None
    when it is not a request for publicity or advocacy about the picture.

    "Write a song promoting this." -> "Write a song promoting recycling.": if that scores low,
    the prompt's risk came only from what "this" might show.
    """
    if not _ADVOCACY.search(text) or not _PICTURE_REFERENCE.search(text):
        return None
    return _PICTURE_REFERENCE.sub(HARMLESS_SUBJECT, text)


class Embedder(Protocol):
    """Text embedder (all-MiniLM-L6-v2 in production)."""

    name: str

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class Head(Protocol):
    """Risk head on embeddings: overall probability and per-category probabilities."""

    categories: list[str]
    version: str

    def predict(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class LanguageGuesser(Protocol):
    """Identifies the language of a text
    (:class:`vlmguard.analyzer.models.multilingual.LanguageIdentifier`)."""

    def identify(self, text: str) -> Any: ...


@dataclass(frozen=True)
class Multilingual:
    """The second reader for text in other languages: its own encoder and head (fitted on that
    encoder's embeddings) and the language identifier that decides who reads what."""

    embedder: Embedder
    head: Head
    languages: LanguageGuesser


class OCR(Protocol):
    """Reads text inside an RGB image."""

    def read(self, image: np.ndarray) -> Any: ...


class SignDetector(Protocol):
    """Scores a prohibition sign drawn over an RGB image
    (:mod:`vlmguard.analyzer.models.symbols`)."""

    def detect(self, image: np.ndarray) -> tuple[float, str]: ...


class ExplicitDetector(Protocol):
    """Explicit-imagery detector returning (label, score) pairs."""

    def detect(self, image: np.ndarray) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class _Scored:
    overall: float
    categories: dict[str, float]
    #: The view of the text that was scored (None: the text as sent).
    view: TextView | None = None


#: Views that guess English words from the English word list (typos corrected, vowels put
#: back, run-together words split): never read as another language, and not made of a text in
#: one.
ENGLISH_GUESSES = frozenset({"spelling", "vowels", "joined"})

#: What each view undid, for the reasoning ("read as ...").
VIEW_DESCRIPTIONS = {
    "normalised": "with look-alike, letter-like, full-width, upside-down, accented and "
                  "invisible characters normalised",
    "symbols": "with the emoji and symbols between its words removed",
    "emoji": "with its emoji read as the words they stand for",
    "word_reversed": "with each word read forwards",
    "pig_latin": "read from Pig Latin",
    "vowels": "with its left-out vowels put back",
    "quoted": "with its quoted words joined",
    "acrostic": "read from the first words of its lines",
    "joined": "with its run-together words split",
    "spelling": "with its misspellings corrected",
    "html": "decoded from HTML entities",
    "escapes": "decoded from character escapes",
    "binary": "decoded from binary",
    "decimal": "decoded from character codes",
    "morse": "decoded from Morse code",
    "caesar": "decoded from a Caesar or Atbash cipher",
    "nato": "read from the NATO spelling alphabet",
    "hidden": "revealed from invisible characters (tag characters or variation selectors)",
    "base85": "decoded from Ascii85/base85",
    "quoted_printable": "decoded from quoted-printable",
    "uuencode": "decoded from uuencoding",
    "a1z26": "read from letters written as their places in the alphabet",
    "rot47": "decoded from ROT47",
    "filler": "without the filler word strewn between its words",
    "denoised": "with the random letters around its words left out",
    "vertical": "with its letters written one a line joined",
    "spaced": "with its spaced-out letters joined",
    "deleet": "with digits and symbols that stand for letters read as letters",
    "base64": "decoded from base64",
    "base32": "decoded from base32",
    "hex": "decoded from hexadecimal",
    "url": "decoded from URL encoding",
    "rot13": "decoded from ROT13",
    "reversed": "read backwards",
    "pieces": "with its string pieces put back together",
    "window": "in one passage of the long text",
    "pair": "in two neighbouring sentences of the long text",
    "multilingual": "read by the multilingual model",
    "continued": "read as the continuation of the prompt's unfinished sentence",
}


#: Language reported for Latin-letter text no identifier nor word list places (ISO 639-2
#: "mis": uncoded languages): the unsupported-language rule applies to it.
UNREAD_LANGUAGE = "mis"
#: English probability under which such text is English only by default. Of 15,000 English
#: texts (benchmark prompts, the benign training file, the seeds) with 20 letters or more, one
#: OCR'd receipt is under it and reads under half as words.
UNREAD_EN_BELOW = 0.1

#: English probability under which a plain text that reads as words (:data:`MIXED_MIN_WORDS`
#: of its letters in words the word lists know) is read by the multilingual head too. No
#: benchmark prompt (MM-Vet, MOSSBench, FigStep) nor English seed is under it; 1,749 of 10,392
#: texts of the benign training file are (mostly OCR-like text), and the multilingual head
#: flags 4 of them.
MIXED_EN_BELOW = 0.5
MIXED_MIN_WORDS = 0.75
#: Views that re-read a text without undoing anything: a text with only these is plain.
_PLAIN_VIEWS = frozenset({"window", "pair", "spelling", "normalised"})

#: A decoded payload scoring at least this is risky in its own right; only then does the
#: instruction to decode it add evidence (below it, the boost would push harmless sensitive
#: questions over the line: +3 points of benign flagged on the red-team dev seeds, no fewer
#: attacks passed).
DECODED_RISKY = 0.5


def _boost(s: _Scored, logit: float) -> _Scored:
    """``s`` with its log-odds moved by ``logit``: raised for a decoded payload the prompt asks to
    decode (evidence on top of the payload's own score), lowered for a passage read out of its
    context."""
    if logit == 0 or s.overall <= 0:
        return s
    p = min(max(s.overall, 1e-6), 1 - 1e-6)
    boosted = 1.0 / (1.0 + float(np.exp(-(np.log(p / (1 - p)) + logit))))
    scale = boosted / s.overall
    return _Scored(boosted, {c: min(1.0, v * scale) for c, v in s.categories.items()}, s.view)


_ENDS_SENTENCE = re.compile(r"[.!?\u3002\uff01\uff1f:;)\]\"'\u201d\u2019]\s*$")
_TRAILING_ELLIPSIS = re.compile(r"(?:\.{2,}|\u2026)\s*$")
_LEADING_ELLIPSIS = re.compile(r"^\s*(?:\.{2,}|\u2026)\s*")
_SENTENCE_START = re.compile(r"(?:^|[.!?\u3002\n])\s*([^.!?\u3002\n]*)$")


# A prompt that hands the request over to the image's text: "answer the request in the image",
# "follow the instructions in this picture", "do what it says", "fill in the list".
_IMAGE_WORDS = (r"(?:image|picture|photo|photograph|pic|screenshot|figure|drawing|sign|note|"
                r"card|poster|page|list|text|writing|words|instructions?|request|question|"
                r"task|prompt)s?")
_DIRECTS_TO_IMAGE = re.compile(
    r"\b(?:answer|follow|do|respond|reply|complete|fill\s+in|carry\s+out|execute|perform|obey|"
    r"act\s+on|comply\s+with|solve|generate)\b"
    rf"[^.?!\n]{{0,60}}?\b{_IMAGE_WORDS}\b"
    r"|\bwhat\s+(?:it|the\s+\w+|this\s+\w+)\s+(?:says|asks|tells|wants|requests)\b",
    re.IGNORECASE,
)


def directs_to_image(prompt: str) -> bool:
    """Whether the prompt hands its request over to an image's text ("answer the request in
    the image", "do what it says"). Such an image's text is the request, and is read as a
    prompt is: sentence by sentence as well as whole, so a risky sentence among harmless ones
    is not diluted. Other images' text (charts, documents, signs a question is about) is read
    whole: read by sentence, their many short lines flag harmless pictures."""
    return bool(_DIRECTS_TO_IMAGE.search(prompt))


def continuation(prompt: str, image_text: str, keep: int = 120) -> tuple[str, str] | None:
    """``(sentence, whole)``: the prompt's unfinished last sentence continued by an image's
    text, and the whole prompt so continued; None when the image's text does not continue it.

    A sentence that the prompt leaves unfinished ("How should I safely get rid of old ...")
    and the image's text picks up ("... painkillers from my late father?") is one request
    split across the two; the image's text alone is a fragment whose topic words read louder
    than the request they belong to. The prompt's sentence is unfinished when it ends without
    sentence punctuation or with an ellipsis; the image's text picks it up when it starts with
    an ellipsis or a lower-case letter; and one of the two ellipses must be there (a prompt
    without a full stop next to an image whose text starts in lower case is common and says
    nothing: "do what the note says" + "buy milk"). The joined sentence keeps the prompt's last
    ``keep`` characters only, so padding before it cannot dilute it.
    """
    head = prompt.rstrip()
    tail = image_text.strip()
    if not head or not tail:
        return None
    ellipsis_end = _TRAILING_ELLIPSIS.search(head)
    unfinished = ellipsis_end is not None or not _ENDS_SENTENCE.search(head)
    leading = _LEADING_ELLIPSIS.match(tail) is not None
    picks_up = leading or tail[0].islower()
    if not (unfinished and picks_up and (leading or ellipsis_end is not None)):
        return None
    if ellipsis_end is not None:
        head = head[: ellipsis_end.start()].rstrip()
    m = _SENTENCE_START.search(head)
    sentence = (m.group(1) if m else head).strip()[-keep:]
    rest = _LEADING_ELLIPSIS.sub("", tail)
    if not sentence:
        return None
    return f"{sentence} {rest}".strip(), f"{head} {rest}"


def _joint_prompt(text: str, keep: int = 200) -> str:
    """The prompt as it is joined with an image's text: a long prompt keeps its start and its
    end (where "complete the list in the image" usually is), so the encoder's token limit does
    not cut the image's text off the joined reading (the prompt itself is read in full by its
    windows)."""
    if len(text) <= 2 * keep + 20:
        return text
    return f"{text[:keep]} … {text[-keep:]}"


class Tier1Analyzer:
    """Composes the tier-1 models. Blocking: call :meth:`analyze_batch` from a worker thread.

    Args:
        cfg: Analyzer settings.
        taxonomy: The risk taxonomy (category ids must match the head's).
        limits: Image limits, enforced again at decode time.
        embedder: Sentence embedder.
        head: Risk head.
        ocr: OCR reader, or None to skip reading text in images.
        explicit: Explicit-imagery detector, or None to skip it.
        signs: Prohibition-sign detector for the negation rule, or None to skip the rule.
        multilingual: Reader for text in other languages, or None: every text is read as
            English and none is reported as an unsupported language.
        screen: Passage screen distilled from ``head``, or None: every sentence window of a
            long text is read by the encoder (needs an embedder with ``token_ids`` and
            ``input_embeddings``).
    """

    def __init__(
        self,
        cfg: AnalyzerConfig,
        taxonomy: TaxonomyConfig,
        limits: LimitsConfig,
        *,
        embedder: Embedder,
        head: Head,
        ocr: OCR | None,
        explicit: ExplicitDetector | None,
        signs: SignDetector | None = None,
        multilingual: Multilingual | None = None,
        screen: WindowScreen | None = None,
    ) -> None:
        unknown = [c for c in head.categories if taxonomy.get(c) is None]
        if unknown:
            from vlmguard.errors import ConfigError

            raise ConfigError(
                f"risk head categories {unknown} are not in the taxonomy; retrain the head "
                "(vlmguard train analyzer) or fix taxonomy.categories"
            )
        self.cfg = cfg
        self.taxonomy = taxonomy
        self.limits = limits
        self.embedder = embedder
        self.head = head
        self.ocr = ocr
        self.explicit = explicit
        self.signs = signs
        self.multilingual = multilingual
        self.screen = screen if cfg.window_screen else None
        if self.screen is not None and self.screen.head_version != (head.version or ""):
            # Distilled from another head: its ranking says nothing about this head's scores.
            log.warning("passage screen of head %s ignored: the head is %s",
                        self.screen.head_version, head.version)
            self.screen = None
        if self.screen is not None and not (hasattr(embedder, "token_ids")
                                            and hasattr(embedder, "input_embeddings")):
            self.screen = None
        self.name = f"tier1/{head.version}" + (
            f"+{multilingual.head.version}" if multilingual is not None else "")
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_config(
        cls, cfg: AnalyzerConfig, taxonomy: TaxonomyConfig, limits: LimitsConfig
    ) -> Tier1Analyzer:
        """Load the real models (MiniLM, the shipped or configured head, RapidOCR, NudeNet)."""
        from vlmguard.analyzer.models.embedder import MiniLMEmbedder
        from vlmguard.analyzer.models.risk_head import RiskHead

        head = RiskHead.load(cfg.head_path or None)
        # A head fitted on an adapted encoder scores only that encoder's embeddings.
        embedder = MiniLMEmbedder(cfg.embedder_path, threads=cfg.threads,
                                  lora=head.encoder_dir or "", runtime=cfg.encoder_runtime)
        ocr = None
        if cfg.ocr:
            from vlmguard.analyzer.models.ocr import OCRReader

            ocr = OCRReader.from_config(cfg)
        explicit = None
        if cfg.explicit_image:
            from vlmguard.analyzer.models.explicit import ExplicitImageDetector

            explicit = ExplicitImageDetector(min_score=cfg.explicit_min_score,
                                             threads=cfg.threads, spinning=cfg.ort_spinning)
        signs = None
        if cfg.negation_rule:
            from vlmguard.analyzer.models.symbols import ProhibitionSignDetector

            signs = ProhibitionSignDetector()
        multilingual = None
        if cfg.multilingual:
            from vlmguard.analyzer.models.multilingual import load_multilingual

            loaded = load_multilingual(cfg, list(head.categories))
            if loaded is not None:
                multilingual = Multilingual(*loaded)
        screen = None
        if cfg.window_screen:
            from vlmguard.analyzer.models.risk_head import head_dir
            from vlmguard.analyzer.models.screen import WindowScreen

            screen = WindowScreen.load(head_dir(cfg.head_path or None))
        return cls(cfg, taxonomy, limits, embedder=embedder, head=head, ocr=ocr,
                   explicit=explicit, signs=signs, multilingual=multilingual, screen=screen)

    def warmup(self) -> None:
        """Run every model once so the first request does not pay lazy initialisation."""
        blank = np.full((64, 64, 3), 255, dtype=np.uint8)
        self.embedder.embed(["warm up"])
        if self.cfg.text_views:
            views_warm_up()
        if self.multilingual is not None:
            self.multilingual.embedder.embed(["warm up"])
            self.multilingual.languages.identify("warm up")
        if self.ocr is not None:
            self.ocr.read(blank)
        if self.explicit is not None:
            self.explicit.detect(blank)
        if self.signs is not None:
            self.signs.detect(blank)

    # -- scoring -------------------------------------------------------------------------

    def _score(self, texts: list[str], embedder: Embedder | None = None,
               head: Head | None = None) -> list[_Scored]:
        if not texts:
            return []
        emb = (embedder or self.embedder).embed(texts)
        overall, per_cat = (head or self.head).predict(emb)
        out = []
        for i in range(len(texts)):
            cats = per_cat[i]
            top = float(cats.max()) if cats.size else 0.0
            o = float(overall[i])
            # Category scores are scaled so the most likely category carries the overall
            # score: thresholds then mean the same for "is it unsafe" and "unsafe how".
            scores = {
                c: (o * float(cats[j]) / top if top > 0 else 0.0)
                for j, c in enumerate((head or self.head).categories)
            }
            out.append(_Scored(o, scores))
        return out

    def _explicit_timed(self, arr: np.ndarray) -> tuple[list[tuple[str, float]], float]:
        t0 = time.perf_counter()
        labels = self.explicit.detect(arr) if self.explicit is not None else []
        return labels, (time.perf_counter() - t0) * 1000

    def _read_images(
        self, item: AnalysisItem, look_for_signs: bool = False
    ) -> tuple[list[ImageEvidence], dict[str, float]]:
        evidence: list[ImageEvidence] = []
        timings = {"decode": 0.0, "ocr": 0.0, "explicit": 0.0}
        if self.signs is not None:
            timings["signs"] = 0.0
        parallel = (self.cfg.image_models_parallel and self.ocr is not None
                    and self.explicit is not None)
        signs = self.signs if look_for_signs else None
        for idx, img in enumerate(item.images):
            t0 = time.perf_counter()
            # Decoded at reduced size: no model here reads more than ocr_max_side per side
            # (the explicit and sign detectors scale to 320), so a 25-megapixel image costs
            # its decoding and a 1600-pixel copy, not 75 MB of RGB copies per model.
            decoded = decode_reduced(img, idx, self.limits, max_side=self.cfg.ocr_max_side)
            arr = decoded.array
            timings["decode"] += (time.perf_counter() - t0) * 1000
            # Both models read the same decoded array; with image_models_parallel the
            # detector runs in a helper thread while OCR runs here (onnxruntime releases the
            # GIL), so the image costs max(ocr, explicit) instead of their sum.
            pending: Future[tuple[list[tuple[str, float]], float]] | None = None
            if parallel:
                pending = self._pool().submit(self._explicit_timed, arr)
            ocr_text = ""
            t1 = time.perf_counter()
            if self.ocr is not None:
                result = self.ocr.read(arr)
                ocr_text = result.text if len(result.text) >= self.cfg.ocr_min_chars else ""
            timings["ocr"] += (time.perf_counter() - t1) * 1000
            labels, explicit_ms = (pending.result() if pending is not None
                                   else self._explicit_timed(arr))
            timings["explicit"] += explicit_ms
            prohibition = 0.0
            if signs is not None:
                t2 = time.perf_counter()
                prohibition = signs.detect(arr)[0]
                timings["signs"] += (time.perf_counter() - t2) * 1000
            evidence.append(
                ImageEvidence(idx, decoded.width, decoded.height, ocr_text, tuple(labels),
                              prohibition)
            )
        return evidence, timings

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="vlmguard-explicit")
            return self._executor

    def analyze_batch(self, items: Sequence[AnalysisItem]) -> list[Analysis | VLMGuardError]:
        """Analyse a batch; returns one :class:`Analysis` or one error per item, in order."""
        results: list[Analysis | VLMGuardError | None] = [None] * len(items)
        per_item: list[tuple[list[ImageEvidence], dict[str, float]] | None] = [None] * len(items)
        texts: list[str] = []
        slots: list[tuple[int, str, int]] = []  # (item index, kind, image or view index)
        views_of: dict[tuple[int, int], TextView] = {}
        normalised: dict[int, TextView] = {}
        ocr_views: dict[int, TextView] = {}  # position in texts -> view of an image's text
        continued_views: dict[int, TextView] = {}  # position in texts -> continued sentence
        languages: dict[int, tuple[str, bool]] = {}
        ml_texts: list[str] = []
        ml_slots: list[int] = []
        screen_ms: dict[int, float] = {}
        for i, item in enumerate(items):
            # Negation rule: only a request for publicity about the picture has a probe, and
            # only then is the sign looked for (other requests pay no detector latency).
            probe = harmless_probe(item.text) if self.signs is not None else None
            try:
                per_item[i] = self._read_images(item, look_for_signs=probe is not None)
            except InvalidArgumentError as e:
                results[i] = e
                continue
            except Exception:
                log.exception("image analysis failed")
                results[i] = UnavailableError("image analysis failed", reason="STAGE_FAILED")
                continue
            item_views = self._views(item.text) if self.cfg.text_views else []
            stand = stand_in(item.text, item_views)
            if stand is not None:
                # Look-alike, full-width, invisible or spaced-out characters: the text as sent
                # is a disguise whose own score is noise (a harmless question in Cyrillic
                # look-alikes scored 0.54, 0.13 normalised; one with its letters dotted 0.74),
                # so the reading that undoes it stands in for it.
                normalised[i] = stand
            texts.append(normalised[i].text if i in normalised else item.text)
            slots.append((i, "text", -1))
            if self.multilingual is not None:
                own = stand.text if stand is not None else item.text
                languages[i], foreign = self._language(own, item_views)
                # (A text in a language no head reads but written in Latin letters is read by
                # the multilingual head all the same; letter noise is not a language: it reads
                # noise high.)
                whole_foreign = (foreign and (languages[i][1] or languages[i][0] == UNREAD_LANGUAGE)
                                 and not gibberish(own))
                if languages[i][0] not in ("en", "und", ""):
                    # Typos are corrected from the English word list: in another language
                    # they turn its words into English ones ("savoir" -> "savior").
                    item_views = [v for v in item_views if v.name not in ENGLISH_GUESSES]
            cleared, screen_ms[i] = self._screened_out(item_views)
            for v_idx, view in enumerate(item_views):
                if view is stand or v_idx in cleared:
                    continue
                views_of[(i, v_idx)] = view
                texts.append(view.text)
                slots.append((i, "view", v_idx))
            if self.multilingual is not None:
                # Ordered and without repeats: the readings keep the order of the views.
                routed: dict[str, None] = {}
                if whole_foreign:
                    # Another language the multilingual head reads: it scores the text and
                    # each passage of a long one (the English head still scores them too).
                    routed[item.text] = None
                for view in item_views:
                    if whole_foreign and view.name in ("normalised", "window"):
                        routed[view.text] = None
                    elif (view.name not in ("normalised", "pair") and view is not stand
                          and view.name not in ENGLISH_GUESSES):
                        # A passage or a decoded payload in another language inside a text
                        # read as English (a French request padded with English text, base64
                        # of a Russian one), or a disguise taken off a translated request, is
                        # read in its own language: the English head cannot read it, and the
                        # text's language was decided by the rest.
                        lang, supported = self._view_language(view.text)
                        if supported:
                            routed[view.text] = None
                        elif lang and languages[i][1] and view.name in PASSAGE_VIEWS:
                            # A passage in a language no head reads follows the tenant's
                            # unsupported-language rule, as a whole text in it would (the
                            # other views re-read the text's own letters: noise to a language
                            # guesser when they are half undone).
                            languages[i] = (lang, False)
                for text in routed:
                    ml_texts.append(text)
                    ml_slots.append(i)
            if item.context:
                # A conversation: the last turn read after the turns before it, so a request
                # split across turns or framed by the system prompt is read whole.
                texts.append(f"{item.context}\n{_joint_prompt(item.text)}")
                slots.append((i, "context", -1))
            if probe is not None and any(
                    self._signed(ev)
                    for ev in per_item[i][0]):  # type: ignore[index]
                texts.append(probe)
                slots.append((i, "probe", -1))
            for ev in per_item[i][0]:  # type: ignore[index]
                if ev.ocr_text:
                    texts.append(ev.ocr_text)
                    slots.append((i, "ocr", ev.index))
                    # The image's text finishing the prompt's sentence is read as that
                    # sentence, and the prompt joined with it as one text.
                    cont = continuation(item.text, ev.ocr_text)
                    own_text = ev.ocr_text
                    if cont is not None:
                        own_text = cont[0]
                        texts.append(own_text)
                        slots.append((i, "continued", ev.index))
                        continued_views[len(texts) - 1] = TextView("continued", own_text)
                    texts.append(_joint_prompt(cont[1]) if cont is not None
                                 else f"{_joint_prompt(item.text)}\n{ev.ocr_text}")
                    slots.append((i, "joint", ev.index))
                    # The same disguises work in typed text (an encoded or leet request in the
                    # picture): the image's text counts with its riskiest reading too.
                    if self.cfg.text_views:
                        directed = directs_to_image(item.text)
                        # OCR breaks the text into its printed lines; a request the prompt
                        # points at is read by its sentences, not by its lines.
                        for view in self._views(" ".join(own_text.split()) if directed
                                                else own_text, windows=directed):
                            texts.append(view.text)
                            slots.append((i, "ocrview", ev.index))
                            ocr_views[len(texts) - 1] = view
        t0 = time.perf_counter()
        scored = self._score(texts)
        embed_ms = (time.perf_counter() - t0) * 1000
        ml_scored: list[_Scored] = []
        if ml_texts and self.multilingual is not None:
            t0 = time.perf_counter()
            ml_scored = self._score(ml_texts, self.multilingual.embedder, self.multilingual.head)
            embed_ms += (time.perf_counter() - t0) * 1000
        by_item: dict[int, list[tuple[str, int, _Scored]]] = {}
        for i, text, s in zip(ml_slots, ml_texts, ml_scored, strict=True):
            by_item.setdefault(i, []).append(
                ("view", -1, _Scored(s.overall, s.categories, TextView("multilingual", text))))
        for pos, ((i, kind, idx), s) in enumerate(zip(slots, scored, strict=True)):
            if kind == "ocrview":
                s = self._weigh(s, ocr_views[pos])
            elif kind == "text" and i in normalised:
                s = _Scored(s.overall, s.categories, normalised[i])
            elif kind == "view":
                s = self._weigh(s, views_of[(i, idx)])
            elif kind == "continued":
                s = _Scored(s.overall, s.categories, continued_views[pos])
            by_item.setdefault(i, []).append((kind, idx, s))
        for i, item in enumerate(items):
            if results[i] is not None:
                continue
            images, timings = per_item[i]  # type: ignore[misc]
            timings["text_risk"] = embed_ms
            if screen_ms.get(i):
                timings["screen"] = screen_ms[i]
            results[i] = self._compose(item, images, by_item.get(i, []), timings,
                                       languages.get(i, ("", True)))
        out: list[Analysis | VLMGuardError] = []
        for r in results:
            if r is None:  # pragma: no cover - every branch above sets a result
                raise RuntimeError("analyzer produced no result for an item")
            out.append(r)
        return out

    def _screened_out(self, views: Sequence[TextView]) -> tuple[set[int], float]:
        """Indices of the passages in ``views`` that the English encoder does not read: the
        sentence windows of a text of more than ``analyzer.screen_from_windows`` of them, and the
        sentence pairs of one of more than ``analyzer.screen_pairs`` pairs but the
        ``screen_pairs`` it ranks highest, that the passage screen clears
        (vlmguard.analyzer.models.screen). A window in another language is still
        routed to the multilingual head; every other reading is read whatever its length.
        Also returns the milliseconds the screen ran (0.0 when it did not run)."""
        screen = self.screen
        if screen is None:
            return set(), 0.0
        t0 = time.perf_counter()
        ran = False
        cleared: set[int] = set()
        for name, start, top in (("window", self.cfg.screen_from_windows, self.cfg.screen_keep),
                                 ("pair", self.cfg.screen_pairs, self.cfg.screen_pairs)):
            idx = [k for k, v in enumerate(views) if v.name == name]
            if len(idx) <= start:
                continue
            ran = True
            emb: Any = self.embedder
            scores = screen.scores(emb.token_ids([views[k].text for k in idx]),
                                   emb.input_embeddings)
            # Pairs are an extra net over the windows (each of their sentences is read alone
            # too), so they are read by rank only: a threshold would read most pairs of a long
            # text (two sentences carry more risky-looking pieces than one).
            keep = screen.keep(scores, top, by_rank_only=name == "pair")
            out = {k for k, kept in zip(idx, keep, strict=True) if not kept}
            log.debug("passage screen: %d of %d %ss read", len(idx) - len(out), len(idx), name)
            cleared |= out
        return cleared, (time.perf_counter() - t0) * 1000 if ran else 0.0

    def _weigh(self, s: _Scored, view: TextView) -> _Scored:
        """The score of ``view`` as evidence: a risky payload the prompt asks to decode counts
        more, one sentence read out of its context counts less."""
        s = _Scored(s.overall, s.categories, view)
        if view.decoded and s.overall >= DECODED_RISKY:
            return _boost(s, self.cfg.decoded_boost)
        if view.name in ("window", "pair"):
            # The more of the text a passage is, the less the whole-text reading dilutes it and
            # the weaker its reading out of context is as evidence of its own (a role-play
            # frame's first sentence, half of a short prompt, reads risky alone).
            return _boost(s, -(self.cfg.window_discount
                               + self.cfg.window_share_discount * min(view.share, 1.0)))
        return s

    def _language(self, text: str, views: Sequence[TextView] = ()
                  ) -> tuple[tuple[str, bool], bool]:
        """((language, supported), maybe foreign) of the text, identified on the reading that
        stands in for it (look-alike letters from another script must not make English text
        look Russian, nor dotted letters make it look Kabyle); ``views`` are the text's views.
        Maybe foreign: not confidently English (a short Spanish request may be guessed English
        by default), so the multilingual head reads it as well; when the text is plain (no view
        undid a disguise or decoded a payload in it) also a text of words that is only unsure
        English, as a request switching language in mid-sentence is."""
        assert self.multilingual is not None
        guess = self.multilingual.languages.identify(text)
        foreign = bool(getattr(guess, "maybe_foreign", guess.lang not in ("en", "und")))
        if (guess.lang == "en" and guess.confidence < UNREAD_EN_BELOW and self.cfg.text_views
                and unread(text, list(views))):
            # English only by default (the identifier placed it nowhere), and no word list nor
            # any reading makes words of it: a language no head reads, written in Latin letters
            # (a transliteration). Its score means nothing.
            return (UNREAD_LANGUAGE, False), foreign
        plain = all(v.name in _PLAIN_VIEWS for v in views)
        if (plain and not foreign and guess.lang == "en" and guess.confidence < MIXED_EN_BELOW
                and letters_in_words(text) >= MIXED_MIN_WORDS):
            # Words, but not confidently English: a request that switches language in
            # mid-sentence ("how do I make una bomba casera at home?"), which neither head
            # reads whole. (Ciphertext, an encoded payload after a few plain words and letters
            # with the vowels left out are not words: the multilingual head reads noise high.)
            foreign = True
        return (str(guess.lang), bool(guess.supported)), foreign

    def _view_language(self, text: str) -> tuple[str, bool]:
        """(language, supported) of a passage or decoded view when it is confidently in a
        language other than English, else ("", False)."""
        assert self.multilingual is not None
        guess = self.multilingual.languages.identify(text)
        if guess.lang in ("en", "und"):
            return "", False
        return str(guess.lang), bool(guess.supported)

    def _views(self, text: str, windows: bool = True) -> list[TextView]:
        """The text's views (:mod:`vlmguard.analyzer.views`), sentence windows only with
        ``windows``; a view that fails is skipped with a log line rather than failing the
        request: the text as sent is always scored."""
        try:
            return text_views(text, window_chars=self.cfg.window_chars,
                              max_windows=self.cfg.max_windows,
                              windows_from=self.cfg.windows_from_chars if windows
                              else sys.maxsize,
                              pairs=(self.cfg.sentence_pairs
                                     and len(text) >= self.cfg.pairs_from_chars))
        except Exception:  # a bug in a view must not drop the request's analysis
            log.exception("text views failed; scoring the text as sent only")
            return []

    def _signed(self, ev: ImageEvidence) -> bool:
        """The image carries a prohibition sign (the negation rule's visual fact)."""
        return ev.prohibition >= self.cfg.prohibition_min_score

    # -- composing the analysis ----------------------------------------------------------

    def _compose(
        self,
        item: AnalysisItem,
        images: list[ImageEvidence],
        scored: list[tuple[str, int, _Scored]],
        timings: dict[str, float],
        language: tuple[str, bool] = ("", True),
    ) -> Analysis:
        thr = self.cfg.report_threshold
        findings: list[Finding] = []
        cat_scores: dict[str, float] = dict.fromkeys(self.taxonomy.ids, 0.0)
        overall = 0.0
        text_s = next(s for k, _, s in scored if k == "text")
        # The text is as risky as its riskiest reading: the text as sent, a view with a
        # disguise undone, or one passage of a long text.
        for k, _, s in scored:
            if k == "view" and s.overall > text_s.overall:
                text_s = s
        ocr_s = {idx: s for k, idx, s in scored if k == "ocr"}
        for k, idx, s in scored:
            # An image's text that finishes the prompt's sentence is read as that sentence:
            # its score stands for the image's text, lower or higher.
            if k == "continued":
                ocr_s[idx] = s
        for k, idx, s in scored:
            if k == "ocrview" and s.overall > ocr_s[idx].overall:
                ocr_s[idx] = s
        joint_s = {idx: s for k, idx, s in scored if k == "joint"}
        ocr_text = {ev.index: ev.ocr_text for ev in images}
        probe_s = next((s for k, _, s in scored if k == "probe"), None)
        negated: tuple[float, float] | None = None  # (prompt's own score, discounted to)
        if (probe_s is not None and probe_s.overall < thr
                and probe_s.overall < text_s.overall):
            # Negation rule: the image says "no" to what it shows, so promoting "this" promotes
            # the prohibition. The prompt, and the prompt joined with the text of a signed
            # image, keep only the risk the same request has about a harmless subject; the
            # image's own text keeps its score.
            negated = (text_s.overall, probe_s.overall)
            text_s = probe_s
            for ev in images:
                if self._signed(ev) and ev.index in joint_s:
                    joint_s[ev.index] = (ocr_s[ev.index]
                                         if ocr_s[ev.index].overall >= probe_s.overall
                                         else probe_s)

        def add(s: _Scored, modality: Modality, source: str, evidence: str, idx: int) -> None:
            nonlocal overall
            overall = max(overall, s.overall)
            for c, v in s.categories.items():
                cat_scores[c] = max(cat_scores.get(c, 0.0), v)
                if v >= thr:
                    findings.append(Finding(c, v, modality, evidence, source, idx))

        if text_s.view is None:
            add(text_s, Modality.TEXT, "text_risk", excerpt(item.text), -1)
        else:
            add(text_s, Modality.TEXT, f"text_risk:{text_s.view.name}",
                excerpt(f"{VIEW_DESCRIPTIONS.get(text_s.view.name, text_s.view.name)}: "
                        f"{text_s.view.text}"), -1)
        context_s = next((s for k, _, s in scored if k == "context"), None)
        if context_s is not None and context_s.overall > text_s.overall:
            # The conversation carries risk the last turn alone does not: it counts (the last
            # turn's own score stays in the reasoning).
            add(context_s, Modality.TEXT, "context_risk",
                excerpt(f"the last turn read with the conversation before it: "
                        f"{item.context} / {item.text}", 200), -1)
        else:
            context_s = None
        for idx, s in ocr_s.items():
            if s.view is None:
                add(s, Modality.IMAGE, "ocr_text_risk", excerpt(ocr_text[idx], 200), idx)
            else:
                add(s, Modality.IMAGE, f"ocr_text_risk:{s.view.name}",
                    excerpt(f"{VIEW_DESCRIPTIONS.get(s.view.name, s.view.name)}: "
                            f"{s.view.text}", 200), idx)
        for idx, s in joint_s.items():
            # The joined text only counts as cross-modal evidence when it adds risk beyond
            # either part alone; otherwise the TEXT / IMAGE findings already say it.
            if s.overall > max(text_s.overall, ocr_s[idx].overall):
                add(s, Modality.CROSS_MODAL, "ocr_joint_risk",
                    excerpt(f"prompt + text in image {idx + 1}: {ocr_text[idx]}", 200), idx)
        for ev in images:
            if ev.explicit_labels:
                top = max(score for _, score in ev.explicit_labels)
                labels = ", ".join(f"{lab} ({sc:.2f})" for lab, sc in ev.explicit_labels[:4])
                overall = max(overall, top)
                cat_scores[EXPLICIT_CATEGORY] = max(cat_scores.get(EXPLICIT_CATEGORY, 0.0), top)
                if top >= thr:
                    findings.append(Finding(EXPLICIT_CATEGORY, top, Modality.IMAGE,
                                            f"detector labels: {labels}", "explicit_image",
                                            ev.index))
        self._child_safety(item, images, findings, cat_scores)
        findings.sort(key=lambda f: (-f.score, f.category))
        reasoning = self._reasoning(item, images, text_s, ocr_s, joint_s, negated)
        if context_s is not None:
            c, v = self._top(context_s)
            reasoning = replace(reasoning, textual=(
                f"{reasoning.textual} Read with the conversation before it, the last turn "
                f"scores {context_s.overall:.2f}; the closest risk category is "
                f"{self._describe(c)} at {v:.2f}."))
        if not language[1]:
            which = ("not one it recognises: no word list nor reading makes words of it"
                     if language[0] == UNREAD_LANGUAGE else language[0])
            reasoning = replace(reasoning, textual=(
                f"The text prompt is in a language the analyzer does not read ({which}), "
                f"so its score ({text_s.overall:.2f}) says little about it."))
        return Analysis(
            score=overall,
            findings=tuple(findings),
            reasoning=reasoning,
            analyzer=self.name,
            category_scores=cat_scores,
            images=tuple(images),
            timings_ms=timings,
            language="" if language[0] == "und" else language[0],
            language_supported=language[1],
        )

    def _child_safety(
        self,
        item: AnalysisItem,
        images: list[ImageEvidence],
        findings: list[Finding],
        cat_scores: dict[str, float],
    ) -> None:
        if self.taxonomy.get(CHILD_CATEGORY) is None:
            return
        sexual = cat_scores.get(EXPLICIT_CATEGORY, 0.0)
        if sexual < self.cfg.report_threshold:
            return
        mention = _MINOR.search(item.text)
        where, idx, modality = "the prompt", -1, Modality.TEXT
        if mention is None:
            for ev in images:
                mention = _MINOR.search(ev.ocr_text)
                if mention is not None:
                    where, idx, modality = f"the text in image {ev.index + 1}", ev.index, \
                        Modality.IMAGE
                    break
        if mention is None:
            return
        if any(f.category == EXPLICIT_CATEGORY and f.modality is not modality
               for f in findings):
            modality = Modality.CROSS_MODAL
        cat_scores[CHILD_CATEGORY] = max(cat_scores.get(CHILD_CATEGORY, 0.0), sexual)
        findings.append(Finding(CHILD_CATEGORY, sexual, modality,
                                f"sexual content ({sexual:.2f}) with a mention of a minor in "
                                f"{where}: {mention.group(0)!r}", "child_safety_rule", idx))

    def _top(self, s: _Scored) -> tuple[str, float]:
        c = max(s.categories, key=lambda k: s.categories[k])
        return c, s.categories[c]

    def _describe(self, category: str) -> str:
        cat = self.taxonomy.get(category)
        return f"{category} ({cat.description})" if cat else category

    def _reasoning(
        self,
        item: AnalysisItem,
        images: list[ImageEvidence],
        text_s: _Scored,
        ocr_s: dict[int, _Scored],
        joint_s: dict[int, _Scored],
        negated: tuple[float, float] | None = None,
    ) -> ModalityReasoning:
        thr = self.cfg.report_threshold
        c, v = self._top(text_s)
        if negated is not None:
            textual = (f"The text prompt asks to promote or spread what the image shows; alone "
                       f"it scores {negated[0]:.2f}, and {negated[1]:.2f} about a harmless "
                       "subject, so its risk depends on what the image shows.")
        elif text_s.overall >= thr and text_s.view is not None:
            how = VIEW_DESCRIPTIONS.get(text_s.view.name, text_s.view.name)
            extra = (" It asks for the payload to be decoded or reassembled, which is itself an "
                     "evasion pattern." if text_s.view.decoded else "")
            textual = (f"Read {how}, the text prompt scores {text_s.overall:.2f}; the closest "
                       f"risk category is {self._describe(c)} at {v:.2f}.{extra}")
        elif text_s.overall >= thr:
            textual = (f"The text prompt alone scores {text_s.overall:.2f}; the closest risk "
                       f"category is {self._describe(c)} at {v:.2f}.")
        else:
            textual = f"The text prompt alone shows no risk (score {text_s.overall:.2f})."
        if not images:
            visual = "No image was sent."
            cross = "No image was sent, so there is no cross-modal risk."
            return ModalityReasoning(textual, visual, cross)
        vis_parts, cross_parts = [], []
        refers = bool(_REFERS_TO_IMAGE.search(item.text))
        for ev in images:
            n = ev.index + 1
            if ev.ocr_text:
                s = ocr_s[ev.index]
                oc, _ov = self._top(s)
                words = len(ev.ocr_text.split())
                if s.overall >= thr:
                    vis_parts.append(f"Image {n} contains typed text ({words} words) that scores "
                                     f"{s.overall:.2f}, mostly for {self._describe(oc)}.")
                else:
                    vis_parts.append(f"Image {n} contains typed text ({words} words) with no "
                                     f"risk found (score {s.overall:.2f}).")
                j = joint_s[ev.index]
                jc, _ = self._top(j)
                if j.overall >= thr and j.overall > text_s.overall:
                    how = ("the prompt points the model at the image's content, so the image's "
                           "text becomes the real instruction (typographic attack pattern)"
                           if refers else "the image's text changes what the prompt asks for")
                    cross_parts.append(f"With image {n}, the request scores {j.overall:.2f} "
                                       f"(prompt alone {text_s.overall:.2f}) for "
                                       f"{self._describe(jc)}: {how}.")
                else:
                    cross_parts.append(f"The prompt and the text in image {n} add no risk "
                                       f"together (combined score {j.overall:.2f}).")
            else:
                vis_parts.append(f"Image {n} ({ev.width}x{ev.height}) has no readable text.")
            if self._signed(ev):
                vis_parts.append(f"Image {n} has a prohibition sign drawn over it (detector "
                                 f"{ev.prohibition:.2f}): it speaks against what it shows.")
                if negated is not None:
                    cross_parts.append(f"Promoting what image {n} shows means promoting its "
                                       "prohibition, so the prompt counts with the risk of the "
                                       f"harmless version ({negated[1]:.2f}).")
            if ev.explicit_labels:
                labels = ", ".join(lab for lab, _ in ev.explicit_labels[:4])
                vis_parts.append(f"The explicit-imagery detector flags image {n}: {labels}.")
                cross_parts.append(f"Any request about image {n} concerns explicit imagery.")
        if not cross_parts:
            cross_parts.append("No text was read from the images, so the cross-modal check rests "
                               "on the text prompt and the image detectors alone.")
        return ModalityReasoning(textual, " ".join(vis_parts), " ".join(cross_parts))
