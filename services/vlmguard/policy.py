"""Policy: per-tenant thresholds turn a tenant-independent analysis into a level and an action.

Rules, per category score ``s`` with the tenant's (or the category override's) thresholds:
a category with handling ``block`` (child safety) blocks at the rewrite threshold; ``care``
categories (specialized advice, controversial topics) are rewritten with care but never blocked
on score alone; any other category blocks at ``block`` and is rewritten at ``rewrite``. A
request in a language the analyzer cannot read that would otherwise pass follows the tenant's
``unsupported_language`` rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlmguard.config import PolicyConfig, TaxonomyConfig, TenantPolicyConfig
from vlmguard.domain import Action, Analysis, RiskLevel, RiskReport
from vlmguard.errors import InvalidArgumentError, Reason

#: What :attr:`Decision.triggered` names when the request's language decided it.
UNSUPPORTED_LANGUAGE = "unsupported_language"
#: What :attr:`Decision.triggered` names when an earlier assistant turn of the conversation read
#: riskier than its question (the pipeline's reading of earlier answers); its findings carry
#: :data:`EARLIER_ANSWER_SOURCE`.
EARLIER_ANSWER = "earlier_answer"
#: ``Finding.source`` of a risk found in an earlier assistant turn.
EARLIER_ANSWER_SOURCE = "earlier_answer_risk"


@dataclass(frozen=True)
class Decision:
    """The policy outcome for one request."""

    action: Action
    level: RiskLevel
    #: Categories that triggered the action, highest score first.
    triggered: tuple[str, ...]


class PolicyEngine:
    """Applies tenant policies.

    Args:
        policy: Tenant policies.
        taxonomy: The risk taxonomy.
        report_threshold: Score from which a category counts as LOW risk.
    """

    def __init__(
        self, policy: PolicyConfig, taxonomy: TaxonomyConfig, report_threshold: float
    ) -> None:
        self.policy = policy
        self.taxonomy = taxonomy
        self.report_threshold = report_threshold

    def tenant(self, tenant_id: str) -> tuple[str, TenantPolicyConfig]:
        """Resolve a tenant id ('' means 'default').

        Raises:
            InvalidArgumentError: UNKNOWN_TENANT when the id is not configured and the policy
                rejects unknown tenants.
        """
        tid = tenant_id or "default"
        pol = self.policy.tenants.get(tid)
        if pol is not None:
            return tid, pol
        if self.policy.unknown_tenant == "default":
            return "default", self.policy.tenants["default"]
        raise InvalidArgumentError(
            "unknown tenant_id; use a configured tenant or leave it empty",
            reason=Reason.UNKNOWN_TENANT,
        )

    def thresholds(self, pol: TenantPolicyConfig, category: str) -> tuple[float, float]:
        """(rewrite, block) thresholds for a category under a tenant policy."""
        override = pol.categories.get(category)
        rewrite = (override.rewrite if override and override.rewrite is not None
                   else pol.rewrite_threshold)
        block = override.block if override and override.block is not None else pol.block_threshold
        return rewrite, max(block, rewrite)

    def decide(self, analysis: Analysis, pol: TenantPolicyConfig) -> Decision:
        """Decide the action and level for an analysis."""
        block: list[tuple[float, str]] = []
        rewrite: list[tuple[float, str]] = []
        for cat, score in analysis.category_scores.items():
            spec = self.taxonomy.get(cat)
            if spec is None:
                continue
            t_rewrite, t_block = self.thresholds(pol, cat)
            if score < t_rewrite:
                continue
            if spec.handling == "block" or (spec.handling != "care" and score >= t_block):
                block.append((score, cat))
            else:
                rewrite.append((score, cat))
        if block:
            cats = tuple(c for _, c in sorted(block, reverse=True))
            return Decision(Action.BLOCK, RiskLevel.HIGH, cats)
        if rewrite:
            cats = tuple(c for _, c in sorted(rewrite, reverse=True))
            if not pol.stages.rewrite:
                return Decision(Action.ALLOW, RiskLevel.MEDIUM, cats)
            return Decision(Action.REWRITE, RiskLevel.MEDIUM, cats)
        if not analysis.language_supported:
            return self._unsupported_language(pol)
        level = RiskLevel.LOW if analysis.score >= self.report_threshold else RiskLevel.NONE
        return Decision(Action.ALLOW, level, ())

    @staticmethod
    def _unsupported_language(pol: TenantPolicyConfig) -> Decision:
        """A request tier 1 would allow, in a language it cannot read: its low score means
        nothing, so the tenant's rule applies instead of a silent ALLOW."""
        rule = pol.unsupported_language
        if rule == "block":
            return Decision(Action.BLOCK, RiskLevel.HIGH, (UNSUPPORTED_LANGUAGE,))
        if rule == "allow" or not pol.stages.rewrite:
            return Decision(Action.ALLOW, RiskLevel.LOW, (UNSUPPORTED_LANGUAGE,))
        return Decision(Action.REWRITE, RiskLevel.LOW, (UNSUPPORTED_LANGUAGE,))

    @staticmethod
    def report(analysis: Analysis, decision: Decision) -> RiskReport:
        """The client-facing report for an analysis under a decision."""
        return RiskReport(
            level=decision.level,
            score=analysis.score,
            findings=analysis.findings,
            reasoning=analysis.reasoning,
            analyzer=analysis.analyzer,
            category_scores=dict(analysis.category_scores),
            language=analysis.language,
            language_supported=analysis.language_supported,
        )
