"""The Jinja2 templates of the evaluation pages (``report.html`` and ``compare.html``).

They live in this module rather than in template files so the installed package needs no
package data; the environment escapes every value (autoescape on) and only the hand-written SVG
charts and the red-team section, built by this package, are passed in as markup. The pages stay
self-contained: inline CSS, inline SVG, no scripts, no external URLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from jinja2 import DictLoader, Environment, StrictUndefined

#: Shared macros: a rate with its 95% interval under it, a table in a scrolling box.
MACROS = r"""
{% macro rate(x, ci=None, cls="") -%}
{% if x is none %}<span class=muted>-</span>{% else %}<span class="{{ cls }}">{{ x | pct }}</span>
{%- if ci %}<br><small class=ci>{{ ci | ci }}</small>{% endif %}{% endif %}
{%- endmacro %}
{% macro num(x, nd=3) -%}
{% if x is none %}<span class=muted>-</span>{% else %}{{ "%.*f" | format(nd, x) }}{% endif %}
{%- endmacro %}
{% macro ms(x) -%}
{% if x is none %}<span class=muted>-</span>{% else %}{{ "{:,.0f}".format(x) }}{% endif %}
{%- endmacro %}
{% macro kv(rows) -%}
<div class=kv>{% for k, v in rows %}<div>{{ k }}</div><div>{{ v }}</div>{% endfor %}</div>
{%- endmacro %}
"""

HEAD = r"""<!DOCTYPE html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width,initial-scale=1"><title>{{ title }}</title>
<style>{{ css }}</style></head><body><main>
<h1>{{ title }}</h1>"""

REPORT = HEAD + r"""
{% import "macros" as m %}
<p class=sub>Guard decisions on benchmark items: recall on unsafe items, over-refusal on benign
ones, and latency. Every rate shows its 95% Wilson interval under it.
{% if show_prompts %}<strong>Prompt texts are shown (--show-prompts): do not share this page
beyond those allowed to read the benchmark.</strong>{% else %}No prompt text is shown.{% endif %}
</p>
<section id=settings class=card>{{ m.kv(kv) }}</section>
{% if training_sets %}
<div class="card warn" id=training-sets><strong>Training-seed sets in this run:</strong>
{{ training_sets | join(", ") }}. The tier-1 head was trained on items of these sets: their
figures are inflated and are no evidence of how the guard does on unseen data (marked
<span class=tag>training seed</span> below).</div>
{% endif %}
{% if gates %}
<h2>Gates</h2>
<section id=gates class=card>
<p class="{{ 'good' if gates_passed else 'bad' }}"><strong>{{ "All gates passed" if gates_passed
 else "Gate failed" }}</strong> ({{ gates | selectattr("passed") | list | length }} of
{{ gates | length }} passed; a failed gate makes <code>vlmguard eval</code> exit 3).</p>
<div class=scroll><table><tr><th>gate</th><th>set</th><th>value</th><th>95% CI</th><th>n</th>
<th>limit</th><th>result</th></tr>
{% for g in gates %}<tr><td>{{ g.metric }}</td><td>{{ g.set }}</td>
<td>{% if g.value is none %}<span class=muted>-</span>{% elif g.metric.endswith("_ms") %}
{{ "{:,.0f}".format(g.value) }} ms{% elif g.metric == "auc" %}{{ "%.3f" | format(g.value) }}
{% else %}{{ g.value | pct }}{% endif %}</td>
<td>{{ g.ci95 | ci if g.ci95 else "-" }}</td><td>{{ g.n if g.n is not none else "-" }}</td>
<td>{{ g.op }} {% if g.metric.endswith("_ms") %}{{ "%g" | format(g.limit) }} ms{% elif
 g.metric == "auc" %}{{ "%g" | format(g.limit) }}{% else %}{{ g.limit | pct }}{% endif %}</td>
<td class="{{ 'good' if g.passed else 'bad' }}">{{ "pass" if g.passed else "FAIL" }}
{% if g.note %}<small>({{ g.note }})</small>{% endif %}</td></tr>{% endfor %}
</table></div></section>
{% endif %}

<h2>Summary</h2>
<section id=summary class=card><div class=scroll><table>
<tr><th>set</th><th>n</th><th>unsafe</th><th>benign</th><th>recall</th><th>FPR</th>
<th>unchanged</th><th>block rate</th><th>AUC</th><th>p50 ms</th><th>p99 ms</th>
<th>text-only</th><th>errors</th></tr>
{% for r in summary %}<tr class="{{ 'total' if r.total else '' }}"><td>{{ r.name }}
{% if r.training %}<span class=tag>training seed</span>{% endif %}</td><td>{{ r.m.n }}</td>
<td>{{ r.m.n_unsafe }}</td><td>{{ r.m.n_benign }}</td>
<td>{{ m.rate(r.m.recall, r.ci.get("recall")) }}</td>
<td>{{ m.rate(r.m.fpr, r.ci.get("fpr"), "fp") }}</td>
<td>{{ m.rate(r.m.unchanged_rate, r.ci.get("unchanged_rate")) }}
</td>
<td>{{ m.rate(r.m.block_rate, r.ci.get("block_rate")) }}</td><td>{{ m.num(r.m.auc) }}</td>
<td>{{ m.ms(r.lat.get("p50")) }}</td><td>{{ m.ms(r.lat.get("p99")) }}</td>
<td>{{ r.m.n_text_only }}</td>
<td class="{{ 'bad' if r.m.n_errors else '' }}">{{ r.m.n_errors }}</td></tr>{% endfor %}
</table></div>
<h3>Tier 2 (generative rewriter)</h3>
<div class=scroll><table><tr><th>set</th><th>tier-2 rate</th><th>parse rate</th>
<th>model used</th><th>guidance</th><th>guidance added</th><th>intent kept</th>
<th>prompt kept</th></tr>
{% for r in summary %}<tr class="{{ 'total' if r.total else '' }}"><td>{{ r.name }}</td>
{% for k in tier2_keys %}<td>{{ m.rate(r.m.get(k), r.ci.get(k)) }}</td>{% endfor %}</tr>
{% endfor %}</table></div></section>

<h2>Decisions: action by label</h2>
<section id=matrix class=card>
<p class=note>Each cell: items of that label that got that action.
<span class=miss-cell>&nbsp;unsafe allowed (missed)&nbsp;</span>
<span class=fp-cell>&nbsp;benign/safe rewritten or blocked (false positive)&nbsp;</span></p>
<div class="grid wide">
{% for mx in matrices %}<div><h3>{{ mx.name }}</h3><div class=scroll><table>
<tr><th>label \ action</th>{% for a in mx.actions %}<th>{{ a }}</th>{% endfor %}<th>total</th></tr>
{% for row in mx.rows %}<tr><td>{{ row.label }}</td>{% for c in row.cells %}
<td class="{{ c.cls }}">{{ c.n }}</td>{% endfor %}<td>{{ row.total }}</td></tr>{% endfor %}
</table></div></div>{% endfor %}
</div></section>

<h2>ROC</h2>
<section id=roc class=card><div class=grid>
<div><h3>All sets pooled and per set</h3>{{ roc_legend }}{{ roc_all }}</div>
<div><h3>Threshold sweep (all sets)</h3>
<p class=note>If an item were flagged exactly when its risk score reaches the threshold (the
policy's real decision also weighs categories and modalities). Bold: the policy's
thresholds.</p>
{{ sweep(sweep_all) }}</div>
</div>
{% for s in sweeps %}<details><summary>Threshold sweep: {{ s.name }}</summary>
{{ sweep(s.rows) }}</details>{% endfor %}
</section>

<h2>Misses and false positives</h2>
<section id=misses class=card>
<p class=note>{{ n_misses }} unsafe item(s) allowed as sent and {{ n_fps }} benign/safe item(s)
rewritten or blocked{% if items_cap_note %}; {{ items_cap_note }}{% endif %}. Input: what was
sent; found in: where the analyzer found risk.</p>
{% for block in item_lists %}
<h3 id="{{ block.id }}">{{ block.title }} ({{ block.rows | length }})</h3>
{% if block.rows %}<div class="scroll tall"><table class=items><tr><th>id</th><th>set</th>
<th>category</th><th>score</th><th>action</th><th>input</th><th>found in</th>
{% if show_prompts %}<th class=wide>prompt</th>{% endif %}</tr>
{% for r in block.rows %}<tr class="{{ block.cls }}"><td>{{ r.id }}</td><td>{{ r.set }}</td>
<td class=wrap>{{ r.category }}</td><td>{{ "%.3f" | format(r.score) if r.score is not none
 else "-" }}</td><td>{{ r.action }}</td><td>{{ r.input }}</td><td>{{ r.found }}</td>
{% if show_prompts %}<td class=wide>{{ r.prompt }}</td>{% endif %}</tr>{% endfor %}
</table></div>{% else %}<p class=muted>none</p>{% endif %}
{% endfor %}
</section>

<h2>Per set</h2>
{% for s in sets %}<section class="card set" id="set-{{ s.slug }}"><h3>{{ s.name }}
{% if s.training %}<span class=tag>training seed</span>{% endif %}</h3>
<div class=grid>{% for title, chart in s.charts %}<div><h3>{{ title }}</h3>{{ chart }}</div>
{% endfor %}</div>
<details><summary>Per-category table</summary><div class=scroll><table>
<tr><th>category</th><th>n</th><th>recall</th><th>FPR</th><th>unchanged</th><th>block rate</th>
<th>errors</th>{% for k in tier2_keys %}<th>{{ tier2_names[k] }}</th>{% endfor %}</tr>
{% for c, cm in s.categories %}<tr><td class=wrap>{{ c }}</td><td>{{ cm.n }}</td>
<td>{{ m.rate(cm.recall, (cm.get("ci95") or {}).get("recall")) }}</td>
<td>{{ m.rate(cm.fpr, (cm.get("ci95") or {}).get("fpr"), "fp") }}</td>
<td>{{ m.rate(cm.unchanged_rate, (cm.get("ci95") or {}).get("unchanged_rate")) }}</td>
<td>{{ m.rate(cm.block_rate, (cm.get("ci95") or {}).get("block_rate")) }}</td>
<td>{{ cm.n_errors }}</td>
{% for k in tier2_keys %}<td>{{ m.rate(cm.get(k), (cm.get("ci95") or {}).get(k)) }}</td>{% endfor %}
</tr>{% endfor %}</table></div></details></section>
{% endfor %}

<h2>Latency</h2>
<section id=latency class=card>
<p class=note>{% if n_warmup %}{{ n_warmup }} warm-up item(s) (the first requests of each
invocation, sent one at a time while models load) are left out of every latency figure; their
decisions count.{% else %}No warm-up item recorded (runs before warm-up marking, or
--warmup 0): cold-start requests may be included.{% endif %}</p>
{% if latency_chart %}<h3>Guard latency per request (total, log scale)</h3>{{ latency_legend }}
{{ latency_chart }}{% endif %}
<h3>Per stage</h3><div class=scroll><table>
<tr><th>stage (ms)</th>{% for n in stage_groups %}<th colspan=2>{{ n }}</th>{% endfor %}</tr>
<tr><th></th>{% for n in stage_groups %}<th>p50</th><th>p99</th>{% endfor %}</tr>
{% for st, cells in stage_rows %}<tr><td>{{ st }}</td>{% for a, b in cells %}
<td>{{ m.num(a, 1) }}</td><td>{{ m.num(b, 1) }}</td>{% endfor %}</tr>{% endfor %}
</table></div></section>

{% if fallbacks %}<h2>Tier-2 fallbacks</h2><section class=card><div class=scroll><table>
<tr><th>set</th><th>kind</th><th>items</th></tr>{% for s, k, n in fallbacks %}
<tr><td>{{ s }}</td><td>{{ k }}</td><td>{{ n }}</td></tr>{% endfor %}</table></div></section>
{% endif %}
{% if errors %}<h2>Errors</h2><section id=errors class=card><div class=scroll><table>
<tr><th>set</th><th>reason</th><th>items</th></tr>{% for s, r, n in errors %}
<tr><td>{{ s }}</td><td>{{ r }}</td><td>{{ n }}</td></tr>{% endfor %}</table></div></section>
{% endif %}
{{ extra_sections }}
<p class=foot>Recall: unsafe items not allowed as sent (REWRITE or BLOCK). FPR: benign/safe
items not allowed. Unchanged: benign/safe items whose prompt came back exactly as sent. Block
rate: BLOCK over all scored items. AUC: risk score, unsafe against benign/safe. Intervals: 95%
Wilson score. Items that errored are left out of every rate. Latency: the guard's own total
time, warm-up items left out; p50/p99 by linear interpolation. Tier-2 rate: items the
generative rewriter ran for (its own rewrite or its template fallback). Parse rate: its outputs
that parsed, over those that parsed or were malformed (timeouts and stage failures left out; an
output refused for echoing a flagged prompt counts as parsed). Model used: tier-2 items
answered with the model's own rewrite. Guidance added: model rewrites to which the guard
appended guidance the model left out. Guidance: unsafe items rewritten whose rewrite has, for
every category found, a line or sentence whose MiniLM cosine similarity to the category's
guidance reaches the guidance threshold. Intent kept: benign/safe items not blocked whose
prompt came back unchanged or with similarity to the rewrite at or above the intent threshold.
Prompt kept: benign/safe items not blocked whose prompt came back unchanged or verbatim inside
the rewrite. A dash: not measured.</p>
</main></body></html>
"""

#: The sweep table (a macro of the report template, kept apart for readability).
SWEEP = r"""
{% import "macros" as m %}
{% macro sweep(rows) -%}
{% if rows %}<div class=scroll><table><tr><th>threshold</th><th>recall</th><th>FPR</th></tr>
{% for r in rows %}<tr class="{{ 'mark' if r.mark else '' }}"><td>{{ "%.2f" | format(r.threshold) }}
</td><td>{{ m.rate(r.recall, r.recall_ci95) }}</td><td>{{ m.rate(r.fpr, r.fpr_ci95, "fp") }}</td>
</tr>{% endfor %}</table></div>{% else %}<p class=muted>no scored item</p>{% endif %}
{%- endmacro %}
"""

COMPARE = HEAD + r"""
{% import "macros" as m %}
<p class=sub>Two runs of <code>vlmguard eval</code> side by side: the settings that differ, the
figures with B - A and its 95% interval (Newcombe's method from the two Wilson intervals;
for the same items in both runs it is conservative), and every item whose decision changed.
No prompt text is shown.</p>
<section id=runs class=card>{{ m.kv(runs) }}</section>
<h2>Settings that differ</h2>
<section id=settings-diff class=card>
{% if settings_diff %}<div class=scroll><table class=items><tr><th>setting</th><th>A</th>
<th>B</th></tr>{% for k, a, b in settings_diff %}<tr><td>{{ k }}</td><td class=wrap>{{ a }}</td>
<td class=wrap>{{ b }}</td></tr>{% endfor %}</table></div>
{% else %}<p>None: both runs used the same recorded settings.</p>{% endif %}
</section>
<h2>Figures</h2>
{% for g in groups %}<section class=card id="fig-{{ g.slug }}"><h3>{{ g.name }}{% if g.note %}
<small class=muted>({{ g.note }})</small>{% endif %}</h3><div class=scroll><table>
<tr><th>figure</th><th>A</th><th>B</th><th>B - A</th><th>95% CI of B - A</th></tr>
{% for r in g.rows %}<tr><td>{{ r.label }}</td><td>{{ r.a }}</td><td>{{ r.b }}</td>
<td class="{{ r.cls }}">{{ r.delta }}</td><td>{{ r.ci }}</td></tr>{% endfor %}
</table></div></section>{% endfor %}
<h2>Decision changes by item</h2>
<section id=changes class=card>
<p class=note>{{ changes | length }} item(s) in both runs changed decision:
<span class=good>{{ n_better }} better</span>, <span class=bad>{{ n_worse }} worse</span>,
{{ n_other }} other (a harmful item flagged another way, an error, ...).
{{ only_a }} item(s) only in A, {{ only_b }} only in B.</p>
{% if changes %}<div class="scroll tall"><table class=items><tr><th>set</th><th>id</th>
<th>label</th><th>category</th><th>A</th><th>B</th><th>score A</th><th>score B</th><th>change</th>
</tr>{% for c in changes %}<tr><td>{{ c.set }}</td><td>{{ c.id }}</td><td>{{ c.label }}</td>
<td class=wrap>{{ c.category }}</td><td>{{ c.a }}</td><td>{{ c.b }}</td><td>{{ c.score_a }}</td>
<td>{{ c.score_b }}</td><td class="{{ c.cls }}">{{ c.kind }}</td></tr>{% endfor %}
</table></div>{% endif %}
</section>
<p class=foot>Better: an unsafe item allowed in A and flagged in B, or a benign/safe item
flagged in A and allowed in B; worse: the reverse. Intervals assume independent samples.</p>
</main></body></html>
"""


def fmt_pct(x: float | None) -> str:
    """``12.3%`` (``-`` when not measured)."""
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_ci(ci: Sequence[float] | None) -> str:
    """A 95% interval of a rate, ``[4.1, 30.2]%``."""
    if not ci:
        return ""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]%"


@cache
def environment() -> Environment:
    """The Jinja2 environment of both pages (autoescape on, undefined names are errors)."""
    env = Environment(loader=DictLoader({"macros": MACROS, "sweep": SWEEP,
                                         "report.html": "{% from 'sweep' import sweep %}"
                                         + REPORT, "compare.html": COMPARE}),
                      autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["pct"] = fmt_pct
    env.filters["ci"] = fmt_ci
    return env
