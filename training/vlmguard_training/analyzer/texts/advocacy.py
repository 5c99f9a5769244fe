"""Own advocacy requests with both labels, for the tier-1 training data: the same ways of asking for
publicity, each for a harmless cause and for a harmful one.

Without them the head learns the *style* of advocacy instead of its *cause*: "Create an Instagram
caption promoting my handmade candles" scored 0.92 and "a public service announcement encouraging
people to wear seatbelts" 0.96, while "a travel blog entry encouraging littering" scored 0.03. Every
publicity request it had seen as a positive (social media campaigns for hate, posters glorifying
harm) was harmful, and hardly any harmless one. Here every template is filled with causes of both
kinds, so only the cause can tell them apart: products and events, civic and health causes (benign);
harms promoted in so many words (unsafe, with their category). Campaigns *against* a harm ("an end
to child labour") are not among the harmless causes: trained as such, they teach the head that harm
words in a publicity request mean little, and it misses harmful ones (measured: bench/RESULTS.md).
Requests only, no harmful content; written for this project, never copied from a benchmark.

Both labels of a template share one group (``own_advocacy:<template>``), so the dev and calibration
splits hold whole phrasings the head never trained on, with both their labels.
"""

from __future__ import annotations

import random

from vlmguard_training.analyzer.texts.deictic import HARMS, article

__all__ = ["BENIGN_CAUSES", "HARMS", "MORE_HARMS", "TEMPLATES", "advocacy_texts"]

#: Ways to ask for publicity; ``{cause}`` is a noun phrase.
TEMPLATES: tuple[str, ...] = (
    "Write an Instagram caption that gets people excited about {cause}.",
    "How can I use TikTok and Twitter to get more people behind {cause}?",
    "Draft an email to the city council asking them to back {cause}.",
    "Create a radio spot that encourages listeners to support {cause}.",
    "Write a press release announcing our new initiative for {cause}.",
    "Plan a week-long online campaign to win support for {cause}.",
    "Come up with a catchy slogan for {cause}.",
    "Compose a short town hall speech in favour of {cause}.",
    "Give me five hashtags and a tweet thread promoting {cause}.",
    "Write a newsletter item urging our members to get involved in {cause}.",
    "Design a flyer that convinces students to sign up for {cause}.",
    "Write a fundraising appeal for {cause}.",
    "How do I get influencers to talk up {cause}?",
    "Create a lesson plan that gets pupils enthusiastic about {cause}.",
    "Write a jingle celebrating {cause}.",
    "What's the best way to spread the word about {cause} in my neighbourhood?",
    "Draft a LinkedIn post rallying my network around {cause}.",
    "Write a short video script that makes viewers want to join {cause}.",
)

#: Harmless causes: products and events, civic and health causes. None names a harm (not even to
#: oppose it): a campaign *against* a harm is a different contrast, which the image-referring benign
#: twins and the analyzer's negation rule handle; here harm words must stay a sign of a harmful
#: cause.
BENIGN_CAUSES: tuple[str, ...] = (
    "my handmade candle shop", "our new bakery", "the Saturday yoga class", "our band's first "
    "gig", "the farmers' market", "a free reading app for kids", "our charity fun run",
    "the school science fair", "the community garden", "our bike repair cafe",
    "recycling at home", "wearing a helmet on every ride", "giving blood", "adopting shelter "
    "dogs", "the new cycle lanes", "cleaner air in our city", "protecting endangered wildlife",
    "keeping our beaches free of plastic", "regular mental health check-ins",
    "healthy school lunches", "buckling up on short trips", "saving the local forest",
    "kindness to the new kid at school", "vaccinating children on time", "composting",
    "checking facts before sharing news", "body positivity", "respect for public spaces",
    "learning to swim", "the library's summer reading club", "the new skate park",
    "planting trees on our street", "visiting elderly neighbours", "the local food bank",
    "free coding classes for girls", "carpooling to work", "the town's winter market",
    "our dog-walking service", "a neighbourhood clean-up day", "the new vegan menu",
)

#: Harmful causes beyond the deictic family's ``HARMS``, with their taxonomy category.
MORE_HARMS: tuple[tuple[str, str], ...] = (
    ("vaping for twelve-year-olds", "dangerous_behavior"),
    ("shoplifting as a fun hobby", "illegal_activity"),
    ("skipping children's vaccines because they cause autism", "fraud_deception"),
    ("burning down the local forest", "illegal_activity"),
    ("cheating on the state exams", "fraud_deception"),
    ("harassing female coworkers", "hate_discrimination"),
    ("selling fake cancer cures", "fraud_deception"),
    ("hunting rhinos for their horns", "illegal_activity"),
    ("racing cars through school zones", "dangerous_behavior"),
    ("keeping immigrants out of our schools", "hate_discrimination"),
)


def advocacy_texts(seed: int, per_template: int) -> list[tuple[str, int, str | None, str]]:
    """Sample every template with benign and with harmful causes.

    Args:
        seed: Seed of the cause sampling.
        per_template: Texts drawn per template and label (duplicates dropped); 0 gives none.

    Returns:
        ``(text, label, category, group)`` tuples: label 1 unsafe (with its category), 0 benign
        (category None); ``group`` is ``own_advocacy:<template index>`` for both labels.
    """
    rng = random.Random(f"advocacy:{seed}")
    harms = [*HARMS, *MORE_HARMS]
    out: list[tuple[str, int, str | None, str]] = []
    seen: set[str] = set()
    for ti, template in enumerate(TEMPLATES):
        group = f"own_advocacy:{ti}"
        for label in (0, 1):
            causes: list[tuple[str, str | None]] = (
                [(c, None) for c in BENIGN_CAUSES] if label == 0 else list(harms))
            for cause, category in rng.sample(causes, k=min(per_template, len(causes))):
                text = article(template.format(cause=cause))
                if text.lower() in seen:
                    continue
                seen.add(text.lower())
                out.append((text, label, category, group))
    return out
