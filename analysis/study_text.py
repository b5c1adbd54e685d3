"""The study's answer in words, written from its tables: no number or verdict in it is typed by hand.

Issue 22: the README's first section states what was measured (model, data, seeds, machine)
and what holds, with claims made on the Holm-adjusted exact p; where the result agrees or
disagrees with a paper's published finding, it says so with the citation. The papers' findings
are data here (``PAPER_FINDINGS``), each read against the paired table of every setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.machine import machine_line, of_jobs
from analysis.study_tables import ALPHA, fmt_p, fmt_ppl, fmt_rate, fmt_signed, fmt_tau, on_edge, verdict


@dataclass(frozen=True)
class Finding:
    """A paper's published comparison: ``scheme`` is ``expected`` (better / worse) than ``against``."""

    source: str
    what: str
    cell: str
    scheme: str
    against: str
    expected: str = "better"
    table: str = "paired"  # or "mc": MC dropout against the standard test of the same scheme


PAPER_FINDINGS = (
    Finding("Gal & Ghahramani (2016), PTB", "variational dropout beats naive dropout", "lstm", "variational", "naive"),
    Finding("Gal & Ghahramani (2016), PTB", "MC dropout beats the standard test of the variational LSTM", "lstm",
            "variational", "standard", table="mc"),
    Finding("Semeniuta et al. (2016), PTB", "dropout on the candidate adds to feed-forward dropout", "lstm",
            "semeniuta", "naive"),
    Finding("Merity et al. (2017), PTB ablation", "DropConnect on the recurrent weights adds to the other dropout",
            "lstm", "weightdrop", "naive"),
)


def _comparison(r: Any) -> str:
    return (f"Δ {fmt_signed(r.diff)} [{fmt_signed(r.diff_low)}, {fmt_signed(r.diff_high)}], "
            f"{r.wins}/{r.pairs} seeds, Holm-adjusted exact p {fmt_p(r.p_holm)}")


def _names(rows: pd.DataFrame) -> str:
    return ", ".join(f"`{r.scheme}` ({_comparison(r)})" for r in rows.itertuples()) or "none"


def _plain(rows: pd.DataFrame) -> str:
    return ", ".join(f"`{s}`" for s in rows.scheme)


def scope(record: dict[str, Any]) -> str:
    """What was measured, from the exported study record: settings, data, seeds, machine."""
    s, m = record["study"], record["machine"]
    settings = record.get("scope", {})
    described = "; ".join(f"`{name}`: {d}" for name, d in settings.items()) or ", ".join(s["settings"])
    grid = len(s["rates_ff"]) * len(s["rates_rec"])
    return (f"Measured on {described}. Every scheme is `naive`'s feed-forward dropout (layer inputs, between "
            f"layers, output) plus its own recurrent mechanism; the two rates were tuned jointly on one "
            f"{len(s['rates_ff'])} x {len(s['rates_rec'])} grid ({grid} trials per scheme, `naive` "
            f"{len(s['rates_ff'])}) on validation with seed {s['tuning_seed']} in `{next(iter(s['settings']))}`, "
            f"then every scheme x cell ran {len(s['seeds'])} other seeds in every setting, on "
            f"{machine_line(of_jobs(m))}. Word-type dropout (`emb`) is off for every scheme.")


def cell_lines(head: pd.DataFrame, pairs: pd.DataFrame, setting: str) -> list[str]:
    lines = []
    for cell in dict.fromkeys(head[head.setting == setting].cell):
        rows = head[(head.setting == setting) & (head.cell == cell)]
        best = rows[rows.best_on_val]
        p = pairs[(pairs.setting == setting) & (pairs.cell == cell)]
        p = p.assign(v=[verdict(r) for r in p.itertuples()])
        vs_naive = p[(p.against == "naive") & (p.scheme != "none")]
        vs_none = p[p.against == "none"]
        dead = rows[rows.finished == 0]
        text = f"- **{cell.upper()}**: "
        if len(best):
            b = best.iloc[0]
            rates = "".join(f"{g} {fmt_rate(v)}, " for g, v in (("ff", b.rate_ff), ("rec", b.rate_rec)) if fmt_rate(v))
            text += (f"best on validation **`{b.scheme}`** ({rates}test {fmt_ppl(b.test_mean)} ± "
                     f"{fmt_ppl(b.test_sd)}). ")
        if len(vs_naive):
            parts = [f"{word} for {_names(vs_naive[vs_naive.v == v]) if v != 'n.s.' else _plain(vs_naive[vs_naive.v == v])}"
                     for v, word in (("better", "better"), ("worse", "worse"), ("n.s.", "no significant difference"))
                     if (vs_naive.v == v).any()]
            text += f"Adding the recurrent part to `naive`'s footing: {'; '.join(parts)}. "
        beat = vs_none[vs_none.v == "better"]
        text += f"{len(beat)} of {len(vs_none)} schemes beat no dropout significantly"
        if len(dead):
            text += "; " + ", ".join(f"`{r.scheme}` diverged on {r.diverged} of {r.seeds} seeds" for r in dead.itertuples())
        lines.append(text + ".")
    return lines


def finding_lines(pairs: pd.DataFrame, mc: pd.DataFrame, settings: list[str]) -> list[str]:
    lines = []
    for f in PAPER_FINDINGS:
        parts = []
        for setting in settings:
            if f.table == "mc":
                rows = mc[(mc.setting == setting) & (mc.cell == f.cell) & (mc.scheme == f.scheme)]
            else:
                rows = pairs[(pairs.setting == setting) & (pairs.cell == f.cell) & (pairs.scheme == f.scheme)
                             & (pairs.against == f.against)]
                if rows.empty:  # compared the other way round (against the best scheme)
                    rows = pairs[(pairs.setting == setting) & (pairs.cell == f.cell) & (pairs.scheme == f.against)
                                 & (pairs.against == f.scheme)]
                    rows = rows.assign(diff=-rows["diff"], diff_low=-rows.diff_high, diff_high=-rows.diff_low,
                                       wins=rows.pairs - rows.wins)
            if rows.empty:
                parts.append(f"`{setting}`: not compared")
                continue
            r = next(rows.itertuples())
            v = verdict(r)
            word = ("agrees" if v == f.expected else "not significant" if v == "n.s." else "disagrees")
            parts.append(f"`{setting}`: **{word}** ({_comparison(r)})")
        lines.append(f"- {f.source}: {f.what} ({f.cell.upper()}). Here: {'; '.join(parts)}.")
    return lines


def in_short(alive: pd.DataFrame, settings: list[str]) -> str:
    """The lead: which recurrent parts add to the footing in every setting, which never, which depend on it.

    Issue 22 asks for a ranking that survives its own checks, so the lead names only comparisons
    against ``naive``'s footing (the recurrent part alone) and sorts them by whether the verdict
    is the same, and significant, in every setting.
    """
    rows = alive[(alive.against == "naive") & (alive.scheme != "none")]
    if rows.empty:
        return ""
    columns = [f"verdict_{s}" for s in settings]

    verdicts = rows[columns].apply(lambda r: set(r) - {"-"}, axis=1)
    groups = (("significantly better in every setting", verdicts.apply(lambda v: v == {"better"})),
              ("significantly worse in every setting", verdicts.apply(lambda v: v == {"worse"})),
              ("better in some settings, not significant in the others",
               verdicts.apply(lambda v: v == {"better", "n.s."})),
              ("worse in some settings, not significant in the others",
               verdicts.apply(lambda v: v == {"worse", "n.s."})),
              ("better in one setting and worse in another", verdicts.apply(lambda v: {"better", "worse"} <= v)),
              ("not significant in any setting", verdicts.apply(lambda v: v <= {"n.s."})))
    parts = [f"{what} for {', '.join(f'{r.cell.upper()} `{r.scheme}`' for r in rows[mask].itertuples())}"
             for what, mask in groups if mask.any()]
    return (f"**In short**, with the same feed-forward footing under every scheme, the recurrent part is "
            f"{'; '.join(parts)} (against `naive`, the footing alone; {len(settings)} settings).")


def divergence_line(head: pd.DataFrame) -> str:
    """The schemes that diverged on some seeds, per setting: the blow-ups a mean over finished seeds hides."""
    rows = head[head.diverged > 0]
    if rows.empty:
        return ""
    listed = ", ".join(f"{r.cell.upper()} `{r.scheme}` in `{r.setting}` ({r.diverged} of {r.seeds} seeds)"
                       for r in rows.itertuples())
    return (f"**Diverged seeds**, left out of the means and of the pairs they belong to: {listed}. A scheme that "
            f"diverges on some seeds is compared on the seeds that finished.")


def edge_line(head: pd.DataFrame, grid: dict[str, list[float]]) -> str:
    """The tuned rates that sit on the end of their grid, where the optimum may lie beyond it."""
    first = head[head.setting == head.setting.iloc[0]]
    edges = [f"{r.cell.upper()} `{r.scheme}` {g} {fmt_rate(getattr(r, f'rate_{g}'))}"
             for r in first.itertuples() for g in ("ff", "rec")
             if fmt_rate(getattr(r, f"rate_{g}")) and on_edge(getattr(r, f"rate_{g}"), grid.get(g))]
    if not edges:
        return ""
    return (f"Tuned on the end of the grid (†), where the optimum may lie beyond it: {', '.join(edges)}. A recurrent "
            f"rate at the grid's low end means the scheme asked for less of its recurrent part than the grid offers.")


def answer(record: dict[str, Any], head: pd.DataFrame, pairs: pd.DataFrame, mc: pd.DataFrame,
           ranks: pd.DataFrame, alive: pd.DataFrame) -> str:
    """The README's first section, in Markdown."""
    settings = list(dict.fromkeys(head.setting))
    lead = in_short(alive, settings)
    out = ([lead, ""] if lead else []) + [scope(record), "",
           f"Claims below are made at {ALPHA:g} on the exact paired sign-flip test, Holm-adjusted over every "
           f"comparison of a setting; Δ is the scheme's test perplexity minus the other's (negative: better), "
           f"with its 95 % t interval.", ""]
    edges = edge_line(head, {"ff": record["study"]["rates_ff"], "rec": record["study"]["rates_rec"]})
    if edges:
        out.extend([edges, ""])
    for setting in settings:
        out.append(f"**In `{setting}`:**")
        out.append("")
        out.extend(cell_lines(head, pairs, setting))
        out.append("")
    dead = divergence_line(head)
    if dead:
        out.extend([dead, ""])
    if len(ranks):
        taus = "; ".join(f"{r.cell.upper()} τ = {fmt_tau(r.kendall_tau)} ({r.schemes} schemes)" for r in ranks.itertuples())
        held = alive[alive.holds]
        out.append(f"**Does the ranking hold?** Kendall's tau between the settings' rankings by mean test perplexity: "
                   f"{taus}. Significant comparisons that hold, with the same sign, in every setting: "
                   + (", ".join(f"{r.cell.upper()} `{r.scheme}` {verdict_word(r, settings)} than `{r.against}`"
                                for r in held.itertuples()) or "none") + ".")
        out.append("")
    if len(mc):
        mc_v = mc.assign(v=[verdict(r) for r in mc.itertuples()])
        helped = mc_v[mc_v.v == "better"]
        hurt = mc_v[mc_v.v == "worse"]
        out.append(f"**MC dropout** ({record['study'].get('mc_samples', '?')} samples, Gal & Ghahramani 2016, eq. 4) "
                   f"against the standard test: lower perplexity for "
                   + (", ".join(f"`{r.scheme}` {r.cell.upper()} in `{r.setting}` ({fmt_signed(r.diff)})" for r in helped.itertuples())
                      or "no scheme") + "; higher for "
                   + (", ".join(f"`{r.scheme}` {r.cell.upper()} in `{r.setting}` ({fmt_signed(r.diff)})" for r in hurt.itertuples())
                      or "no scheme")
                   + f"; no significant difference in the other {len(mc_v) - len(helped) - len(hurt)} of {len(mc_v)} cases.")
        out.append("")
    out.append("**Against the papers** (their finding, then this study's verdict in each setting):")
    out.append("")
    out.extend(finding_lines(pairs, mc, settings))
    return "\n".join(out) + "\n"


def verdict_word(row: Any, settings: list[str]) -> str:
    return getattr(row, f"verdict_{settings[0]}", "n.s.")


def rates_line(head: pd.DataFrame) -> str:
    """The tuned pairs, for the study page."""
    first = head[head.setting == head.setting.iloc[0]]
    return "; ".join(f"{r.cell} `{r.scheme}` ff {fmt_rate(r.rate_ff) or '-'} rec {fmt_rate(r.rate_rec) or '-'}"
                     for r in first.itertuples() if r.scheme != "none")
