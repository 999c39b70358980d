"""The atlas: one static HTML page per model and prompt set, readable from disk with no server and no
internet (no external scripts, styles or fonts; figures are inline PNGs).

It shows the selected neurons and their tokens; per neuron, the head x layer attribution heatmap (mean
score over its explain prompts, consistent pairs outlined); per consistent pair, its prompts with each token
shaded by the head's attention from the last position, the neuron's token shown next, and whether the head
was active; the findings (consistent pairs by head layer, the ablation comparison, each scorer's measures against the
baselines with their bootstrap 95% CIs and tests, the figures that carry signal first, and their histograms). A search box filters the neurons by token.
Every string from the corpus or the tokenizer is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lookups.pipeline.config import AtlasSettings


@dataclass
class AtlasData:
    """Every frame the page shows, read by the atlas step (``sql/reads/atlas_*.sql``)."""

    model: dict  # the models row
    prompt_set_id: str
    neurons: pd.DataFrame  # selected: layer, neuron, token, score, zscore
    scores: pd.DataFrame  # head_neuron_scores rows
    exemplars: pd.DataFrame  # neuron_exemplars rows (layer, neuron, doc_id, split, rank, prompt_token_ids, prompt_act, next_token)
    active: pd.DataFrame  # head_attributions of consistent pairs: layer, neuron, doc_id, head_layer, head, score, active
    ablations: pd.DataFrame  # head_ablations rows
    tests: pd.DataFrame  # ablation_tests rows
    heads_by_layer: pd.DataFrame
    explanations: pd.DataFrame = field(default_factory=pd.DataFrame)  # pair_explanations rows (next-token pairs)
    lookups: pd.DataFrame = field(default_factory=pd.DataFrame)  # head_lookups of the explain prompts (atlas_lookups)
    pair_lookups: pd.DataFrame = field(default_factory=pd.DataFrame)  # per pair: look-up summary and counterfactual test
    explanation_scores: pd.DataFrame = field(default_factory=pd.DataFrame)  # explanation_scores rows: explainer, scorer, cohort, baseline, status, measures
    explanation_tests: pd.DataFrame = field(default_factory=pd.DataFrame)  # explanation_comparison rows (means, CIs, tests, signal)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _heatmap(scores: pd.DataFrame, n_heads: int, layer: int) -> str:
    """Rows: head layers 0..layer; columns: heads; colour: mean score (red +, blue -); consistent outlined."""
    grid = scores.set_index(["head_layer", "head"])
    scale = float(np.nanmax(np.abs(scores["mean_score"].to_numpy()))) if len(scores) else 1.0
    scale = scale or 1.0
    rows = ["<tr><th></th>" + "".join(f"<th>H{h}</th>" for h in range(n_heads)) + "</tr>"]
    for hl in range(layer, -1, -1):
        cells = []
        for h in range(n_heads):
            if (hl, h) not in grid.index:
                cells.append("<td></td>")
                continue
            r = grid.loc[(hl, h)]
            v = float(r["mean_score"])
            a = min(1.0, abs(v) / scale)
            colour = f"rgba(200,40,40,{a:.2f})" if v >= 0 else f"rgba(40,80,200,{a:.2f})"
            cls = ' class="consistent"' if bool(r["consistent"]) else ""
            tip = f"L{hl}H{h}: mean score {v:.4g}, active on {float(r['active_fraction']):.0%} of prompts"
            cells.append(f'<td{cls} style="background:{colour}" title="{_e(tip)}"></td>')
        rows.append(f"<tr><th>L{hl}</th>" + "".join(cells) + "</tr>")
    return '<table class="heat">' + "".join(rows) + "</table>"


def _contribution_colour(value: float, scale: float) -> str:
    a = min(1.0, abs(value) / scale) if scale > 0 else 0.0
    return f"rgba(200,40,40,{a:.2f})" if value >= 0 else f"rgba(40,80,200,{a:.2f})"


def _prompt(tokens: list[str], reading: pd.DataFrame | None, next_token: str, active: bool | None) -> str:
    """A prompt's tokens (BOS dropped, its share noted when the head reads it) shaded by the head's signed
    contribution to the neuron from each position (red adds, blue subtracts; the attention weight is kept in
    ``data-attention`` for the toggle and the tooltip), the position it reads most boxed, then the neuron's token."""
    by_position = reading.set_index("position") if reading is not None and len(reading) else None
    scale = float(by_position["contribution"].abs().max()) if by_position is not None else 0.0
    spans = []
    for i, tok in enumerate(tokens):
        if by_position is None or i + 1 not in by_position.index:
            spans.append(f"<span>{_e(tok)}</span>")
            continue
        r = by_position.loc[i + 1]
        top = " class='top'" if int(r["rank"]) == 1 else ""
        colour = _contribution_colour(float(r["contribution"]), scale)
        tip = f"contribution {float(r['contribution']):+.4g}, attention {float(r['attention']):.2f}"
        spans.append(
            f"<span{top} style='background:{colour}' data-contribution='{colour}' data-attention='{min(1.0, float(r['attention'])):.2f}' "
            f"title='{_e(tip)}'>{_e(tok)}</span>"
        )
    bos = ""
    if by_position is not None and 0 in by_position.index:
        r = by_position.loc[0]
        cls = "bos top" if int(r["rank"]) == 1 else "bos"
        bos = f"<span class='{cls}' title='BOS: contribution {float(r['contribution']):+.4g}, attention {float(r['attention']):.2f}'>BOS</span> "
    mark = "" if active is None else ('<b class="on">active</b> ' if active else '<b class="off">inactive</b> ')
    return f'<div class="prompt">{mark}{bos}{"".join(spans)}<span class="next">{_e(next_token)}</span></div>'


def _lookup_summary(pair_lookups: pd.DataFrame, layer: int, neuron: int, head_layer: int, head: int) -> list[str]:
    """The pair's look-up summary (what its head reads most, how concentrated, the flags) and counterfactual test."""
    if not len(pair_lookups):
        return []
    rows = pair_lookups[
        (pair_lookups["layer"] == layer) & (pair_lookups["neuron"] == neuron) & (pair_lookups["head_layer"] == head_layer)
        & (pair_lookups["head"] == head)
    ]
    if not len(rows):
        return []
    r = rows.iloc[0]
    tokens = ", ".join(_e(repr(t)) for t in list(r["top_tokens"])[:5])
    flags = [name for name, on in (("copying", r["copying"]), ("previous token", r["previous_token"]), ("reads BOS", r["reads_bos"])) if bool(on)]
    out = [
        f"<p class='lookup'><b>reads</b> {tokens} on {int(r['n_active_prompts'])} active prompts; concentration {float(r['concentration']):.2f}, "
        f"median distance {float(r['median_distance']):.0f}{'; ' + ', '.join(flags) if flags else ''}</p>"
    ]
    if pd.notna(r.get("tested_prompts")):
        verdict = "<b class='on'>confirmed</b>" if bool(r["confirmed"]) else "<b class='off'>not confirmed</b>"
        out.append(
            f"<p class='lookup'><b>counterfactual</b> {verdict} (q {float(r['q_value']):.2g}, {int(r['tested_prompts'])} prompts): replacing the token "
            f"it reads most lowers the neuron by {float(r['mean_act_drop_lookup']):.3g} and the head's attribution by "
            f"{float(r['mean_score_drop_share_lookup']):.0%}; a control position {float(r['mean_act_drop_control']):.3g} and "
            f"{float(r['mean_score_drop_share_control']):.0%}</p>"
        )
    out.extend(_knockout_line(r) + _why_line(r))
    return out


def _verdict(confirmed) -> str:
    return "<b class='on'>confirmed</b>" if bool(confirmed) else "<b class='off'>not confirmed</b>"


def _knockout_line(r: pd.Series) -> list[str]:
    """The attention knockout's verdict against both controls, truncated and (where run) untruncated."""
    if pd.isna(r.get("knockout_prompts")):
        return []
    def drop(value) -> str:
        return "n/a" if pd.isna(value) else f"{float(value):.3g}"

    line = (
        f"<p class='lookup'><b>knockout</b> {_verdict(r['knockout_confirmed'])} (q {float(r['knockout_q_position']):.2g} against a control "
        f"position, {float(r['knockout_q_head']):.2g} against a control head; {int(r['knockout_prompts'])} prompts): blocking the edge to the "
        f"position it reads most, in this head only, lowers the neuron by {drop(r['knockout_act_drop'])} and the head's attribution by "
        f"{float(r['knockout_score_drop_share']):.0%}; the control position {drop(r['knockout_act_drop_position'])}, the control head "
        f"{drop(r['knockout_act_drop_head'])}"
    )
    if pd.notna(r.get("untruncated_prompts")):
        line += f"; on the untruncated windows {_verdict(r['untruncated_confirmed'])} (drop {drop(r['untruncated_act_drop'])})"
    return [line + "</p>"]


def _percent(value) -> str:
    """A share as a percentage, two significant digits below 10% (shares near 0 are common: '0.05%', not '-0%')."""
    percent = float(value) * 100
    return f"{percent:.0f}%" if abs(percent) >= 10 else f"{percent:.2g}%"


def _why_line(r: pd.Series) -> list[str]:
    """Why the head looks there (QK attribution): the components that most often carry the key and the query side."""
    if pd.isna(r.get("qk_edges")):
        return []
    def listed(names, counts) -> str:
        return ", ".join(f"{_e(str(n))} ({int(c)})" for n, c in zip(list(names), list(counts)))

    kind = "lexical: the token itself" if bool(r["lexical"]) else "by context written into that position"
    return [
        f"<p class='lookup'><b>why it looks there</b> ({int(r['qk_edges'])} edges, {kind}; median share of the token's own embedding "
        f"{_percent(r['median_lexical_share'])}): key side {listed(r['key_components'], r['key_component_edges'])}; query side "
        f"{listed(r['query_components'], r['query_component_edges'])}</p>"
    ]


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} h3{font-size:1em;margin:.8em 0 .3em}
table.heat{border-collapse:collapse;font-size:10px} table.heat td{width:14px;height:10px;border:1px solid #eee}
p.explanation{margin:4px 0 4px 12px;font-size:13px} table.heat td.consistent{outline:2px solid #111} table.heat th{font-weight:normal;color:#666;padding:0 3px}
.prompt{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;margin:2px 0}
.next{background:#cfe8cf;font-weight:bold;margin-left:2px} .on{color:#b00} .off{color:#777}
.prompt span.top{outline:2px solid #111;outline-offset:-1px} .prompt .bos{color:#777;font-size:10px} p.lookup{margin:4px 0 4px 12px;font-size:13px}
.neuron{border-top:1px solid #ccc;padding-top:.5em} .muted{color:#777} table.facts td{padding:0 1em 0 0} tr.signal{font-weight:bold}
input#search{font-size:1em;padding:.3em;width:20em}
"""

SCRIPT = """
function filterNeurons(){
  var q=document.getElementById('search').value.trim().toLowerCase();
  var shown=0;
  document.querySelectorAll('section.neuron').forEach(function(s){
    var hit=!q||s.dataset.token.toLowerCase().indexOf(q)>=0;
    s.style.display=hit?'':'none'; if(hit){shown++;}
  });
  document.getElementById('shown').textContent=shown;
}
function shadeBy(what){
  document.querySelectorAll('.prompt span[data-attention]').forEach(function(s){
    s.style.background=what==='attention'?'rgba(255,170,0,'+s.dataset.attention+')':s.dataset.contribution;
  });
}
"""


def render_atlas(data: AtlasData, token_strings, settings: AtlasSettings, figures: dict[str, bytes]) -> str:
    """The whole page, from frames alone. token_strings(ids) -> list of display strings; figures: PNG bytes by name."""
    figs = {name: base64.b64encode(png).decode() for name, png in figures.items()}
    page = _Page.of(data, int(data.model["n_heads"]), token_strings, settings)
    parts = _header(data) + _findings(data, figs)
    parts.append(
        "<h2>Neurons</h2><p><input id='search' placeholder='search by token, e.g. order' oninput='filterNeurons()'> "
        f"<span id='shown'>{len(data.neurons)}</span> shown</p>"
        "<p class='muted'>Prompts are shaded by the head's signed contribution to the neuron from each token (red adds, blue "
        "subtracts); the token it reads most is boxed. Shade by <a href='#' onclick=\"shadeBy('contribution');return false\">contribution</a> "
        "or <a href='#' onclick=\"shadeBy('attention');return false\">attention</a>.</p>"
    )
    for n in data.neurons.itertuples():
        parts.extend(_neuron_section(page, n))
    parts.append("</body></html>")
    return "\n".join(parts)


def _header(data: AtlasData) -> list[str]:
    """The page's head (title, style, script) and the facts table: model, architecture, prompt set, counts."""
    m = data.model
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>lookups atlas: {_e(m['model_id'])}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>Context look-ups in {_e(m['model_id'])}</h1>",
        "<table class='facts'>"
        + "".join(
            f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
            for k, v in [
                ("model", m["model_id"]),
                ("architecture", f"{m['n_layers']} layers, {m['n_heads']} heads ({m['n_kv_heads']} KV), d_mlp {m['d_mlp']}, {m['mlp_kind']} MLP"),
                ("prompt set", data.prompt_set_id),
                ("selected neurons", len(data.neurons)),
                ("consistent pairs", int(data.scores["consistent"].sum()) if len(data.scores) else 0),
            ]
        )
        + "</table>",
    ]


def _findings(data: AtlasData, figs: dict[str, str]) -> list[str]:
    """The findings: consistent pairs by head layer, the ablation comparison (figure and KS tests), the explanation
    scores' table and histograms, or a note that explanations are still to come. ``figs``: base64 PNGs by name."""
    parts = ["<h2>Findings</h2>"]
    if "heads_by_layer" in figs:
        parts.append(f"<img alt='consistent pairs by head layer' src='data:image/png;base64,{figs['heads_by_layer']}'>")
    if "ablation" in figs:
        parts.append(f"<img alt='ablation box plot' src='data:image/png;base64,{figs['ablation']}'>")
    if len(data.tests):
        parts.append(
            "<table class='facts'><tr><th>metric</th><th>active (n)</th><th>inactive (n)</th><th>mean drop, active</th><th>mean drop, inactive</th>"
            "<th>KS</th><th>p</th></tr>"
        )
        for t in data.tests.itertuples():
            parts.append(
                f"<tr><td>{_e(t.metric)}</td><td>{t.n_active}</td><td>{t.n_inactive}</td><td>{t.mean_active:.4g}</td>"
                f"<td>{t.mean_inactive:.4g}</td><td>{t.ks_statistic:.3f}</td><td>{t.p_value:.2g}</td></tr>"
            )
        parts.append("</table>")
    parts.extend(_score_table(data.explanation_tests))
    if "score_histograms" in figs:
        parts.append(f"<img alt='histograms of the explanation scores against the baselines' src='data:image/png;base64,{figs['score_histograms']}'>")
    if not len(data.explanations):
        parts.append("<p class='muted'>Explanations and their scores appear here once the explanation assets have run.</p>")
    return parts


@dataclass
class _Page:
    """What every neuron's section reads: the frames, grouped once for the page by neuron or by (pair, prompt)."""

    data: AtlasData
    n_heads: int
    token_strings: Callable[[list[int]], list[str]]
    settings: AtlasSettings
    scores: dict  # (layer, neuron) -> its head_neuron_scores rows
    exemplars: dict  # (layer, neuron) -> its neuron_exemplars rows
    active: dict  # (layer, neuron, head_layer, head, doc_id) -> whether the head was active on the prompt
    reading: dict  # (layer, neuron, head_layer, head, doc_id) -> the head's look-up rows on the prompt

    @classmethod
    def of(cls, data: AtlasData, n_heads: int, token_strings, settings: AtlasSettings) -> _Page:
        return cls(
            data, n_heads, token_strings, settings,
            scores={k: g for k, g in data.scores.groupby(["layer", "neuron"])},
            exemplars={k: g for k, g in data.exemplars.groupby(["layer", "neuron"])},
            active=data.active.set_index(["layer", "neuron", "head_layer", "head", "doc_id"])["active"].to_dict(),
            reading={k: g for k, g in data.lookups.groupby(["layer", "neuron", "head_layer", "head", "doc_id"])} if len(data.lookups) else {},
        )


def _neuron_section(page: _Page, n) -> list[str]:
    """One neuron's section: its token and scores, its heatmap, then its best consistent heads (``_pair_details``)."""
    data, settings = page.data, page.settings
    key = (n.layer, n.neuron)
    scores = page.scores.get(key, pd.DataFrame(columns=data.scores.columns))
    parts = [
        f"<section class='neuron' data-token='{_e(n.token)}' id='n{n.layer}-{n.neuron}'>",
        f"<h3>L{n.layer} N{n.neuron} → <span class='next'>{_e(n.token)}</span> <span class='muted'>score {n.score:.2f}, z {n.zscore:.1f}</span></h3>",
    ]
    if len(scores):
        parts.append(_heatmap(scores, page.n_heads, int(n.layer)))
    # astype(bool): an empty frame's column is object-typed, and indexing by it would select columns, not rows.
    consistent = scores[scores["consistent"].astype(bool)].sort_values("mean_score", ascending=False).head(settings.pairs_per_neuron)
    explain = page.exemplars.get(key, pd.DataFrame(columns=data.exemplars.columns))
    explain = explain[explain["split"] == "explain"].head(settings.prompts_per_pair)
    if not len(consistent):
        parts.append("<p class='muted'>No consistent head.</p>")
    for pair in consistent.itertuples():
        parts.extend(_pair_details(page, n, pair, explain))
    parts.append("</section>")
    return parts


def _pair_details(page: _Page, n, pair, explain: pd.DataFrame) -> list[str]:
    """One (neuron, head) pair, folded: its scores and ablation effect, its look-up summary and explanations, then
    its ``explain`` prompts shaded by the head's contribution (``_prompt``)."""
    ablations = page.data.ablations
    drops = ablations[
        (ablations["layer"] == n.layer) & (ablations["neuron"] == n.neuron) & (ablations["head_layer"] == pair.head_layer) & (ablations["head"] == pair.head)
    ]
    effect = ""
    if len(drops):
        on, off = drops[drops["active"]]["act_drop"], drops[~drops["active"]]["act_drop"]
        effect = f"; ablation drop {on.mean():.3g} when active vs {off.mean():.3g} when not" if len(on) and len(off) else ""
    parts = [
        f"<details><summary>head L{pair.head_layer}H{pair.head}: rank {pair.rank}, mean score {pair.mean_score:.3g}, "
        f"active on {pair.active_fraction:.0%} of {pair.n_prompts} prompts{_e(effect)}</summary>"
    ]
    parts.extend(_lookup_summary(page.data.pair_lookups, n.layer, n.neuron, pair.head_layer, pair.head))
    parts.extend(_explanations(page.data.explanations, n.layer, n.neuron, pair.head_layer, pair.head))
    for ex in explain.itertuples():
        pair_key = (n.layer, n.neuron, pair.head_layer, pair.head, ex.doc_id)
        flag = page.active.get(pair_key)
        parts.append(_prompt(page.token_strings(list(ex.prompt_token_ids)), page.reading.get(pair_key), ex.next_token, None if flag is None else bool(flag)))
    parts.append("</details>")
    return parts


def _explanations(explanations: pd.DataFrame, layer: int, neuron: int, head_layer: int, head: int) -> list[str]:
    """One line per explainer: the explanation and its held-out scores (or why it has none)."""
    if not len(explanations):
        return []
    rows = explanations[
        (explanations["layer"] == layer) & (explanations["neuron"] == neuron) & (explanations["head_layer"] == head_layer) & (explanations["head"] == head)
    ]
    out = []
    for r in rows.itertuples():
        figures = [f"{name} {value:.2f}" for name, value in (("AUC", r.auc), ("E", r.e_score), ("embedding AUC", r.embedding_auc),
                                                              ("simulation r", r.simulation_correlation)) if pd.notna(value)]
        score = ", ".join(figures) if figures else _e(r.reason or r.status)
        out.append(f"<p class='explanation'><b>{_e(r.explainer)}</b> ({score}): {_e(r.explanation or '')}</p>")
    return out


def _ci(low, high) -> str:
    return "n/a" if pd.isna(low) or pd.isna(high) else f"[{low:.3f}, {high:.3f}]"


def _p(value) -> str:
    return "" if pd.isna(value) else f"{value:.2g}"


#: How the atlas names each scorer's measure.
MEASURE_NAMES = {"auc": "AUC", "calibrated_e": "calibrated E", "e_score": "E", "correlation": "r (Spearman)"}


def _score_table(tests: pd.DataFrame) -> list[str]:
    """Per explainer, scorer and measure (the rows that carry signal first): the next-token pairs' mean and its
    bootstrap 95% CI; against the random neurons and against the shuffled explanations, the baseline's mean, the
    difference with its CI and the permutation p."""
    if not len(tests):
        return []
    out = [
        "<h3>Do the explanations carry signal?</h3><p class='muted'>Means over next-token pairs' held-out prompts with 95% "
        "percentile bootstrap CIs. Against each baseline: its mean, the difference (random neurons: of the means; shuffled: "
        "each explanation on its own prompts minus on another pair's) with its bootstrap CI, and a two-sided permutation "
        "test. <b>signal</b>: the CI of the difference excludes 0 and p &lt; 0.05. Chance is 0.5 (r: 0).</p>",
        "<table class='facts' id='explanation-tests'><tr><th>explainer</th><th>scorer</th><th>measure</th><th>n</th><th>mean</th>"
        "<th>95% CI</th><th>random neurons</th><th>difference [95% CI]</th><th>p</th><th>shuffled</th><th>difference [95% CI]</th>"
        "<th>p</th></tr>",
    ]
    by = {(r.explainer, r.scorer, r.measure, r.baseline): r for r in tests.itertuples()}
    for r in tests[tests["baseline"] == "random_neurons"].itertuples():
        cells = [_e(r.explainer), _e(r.scorer), MEASURE_NAMES.get(r.measure, _e(r.measure)), str(int(r.n)), _mean(r.mean), _ci(r.ci_low, r.ci_high)]
        for baseline in (r, by.get((r.explainer, r.scorer, r.measure, "shuffled"))):
            if baseline is None or not baseline.n_baseline:
                cells += ["n/a", "", ""]
                continue
            cells += [f"{_mean(baseline.mean_baseline)} (n={int(baseline.n_baseline)})", _difference(baseline), _p(baseline.permutation_p)]
        mark = " class='signal'" if bool(r.signal) else ""
        out.append(f"<tr{mark}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return out


def _mean(value) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3f}"


def _difference(r) -> str:
    if pd.isna(r.difference):
        return "n/a"
    ci = "" if pd.isna(r.difference_ci_low) else f" [{r.difference_ci_low:+.3f}, {r.difference_ci_high:+.3f}]"
    return f"{r.difference:+.3f}{ci}"
