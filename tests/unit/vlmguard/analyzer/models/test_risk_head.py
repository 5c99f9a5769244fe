"""The risk head's scores: a non-finite one fails closed."""

from __future__ import annotations

import numpy as np
import pytest

from vlmguard.config import TaxonomyConfig

CATS = list(TaxonomyConfig().ids)


def test_a_non_finite_head_score_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    from vlmguard.analyzer.models.risk_head import RiskHead

    rng = np.random.default_rng(0)
    head = RiskHead(CATS, rng.normal(size=4), 0.0, rng.normal(size=(4, len(CATS))),
                    np.zeros(len(CATS)))
    emb = rng.normal(size=(3, 4)).astype(np.float32)
    emb[1, 2] = np.nan
    p, q = head.predict(emb)
    assert np.isfinite(p).all() and np.isfinite(q).all()
    assert p[1] == 1.0 and (q[1] == 1.0).all()
    assert p[0] < 1.0
    assert "non-finite" in caplog.text
