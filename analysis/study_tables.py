"""A study's tables, from its seeded runs alone: what each scheme reached, and which differences hold.

Issue 22's design, read back:

* **headline**: per setting x cell x scheme, the tuned rates (``rate_ff``, ``rate_rec``), the
  validation and test perplexity over seeds (mean, sd, 95 % t interval), MC-dropout test
  perplexity, and how many seeds finished. The cell's best scheme is chosen on **validation**
  (lowest mean best-validation perplexity among schemes whose seeds all finished), never on test.
* **paired**: per setting and cell, every scheme against ``none`` (does it help at all), against
  ``naive`` (does its recurrent part add to the shared feed-forward footing) and against the
  cell's validation-best scheme; the mean difference with its 95 % interval, the paired t-test,
  the exact sign-flip test, Holm's adjustment of the exact p over every comparison of the
  setting (one family per setting: each setting is its own experiment), and seeds won.
* **mc**: per scheme, MC-dropout test perplexity minus the standard one, paired over seeds,
  Holm-adjusted over the table.
* **rank_stability**: per cell, Kendall's tau between the settings' rankings by mean test
  perplexity (a scheme with no finished seed ranks last), and **survival**: which of the
  significant comparisons of the first setting hold, with the same sign, in every other.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

import pandas as pd

from analysis.runs import CELL_ORDER, SCHEME_ORDER, ordered
from analysis.stats import holm, kendall_tau, paired, summarise

ALPHA = 0.05  # the level a claim is made at, on the Holm-adjusted exact p
RUN_COLUMNS = ["setting", "scheme", "cell", "seed", "status", "rate_ff", "rate_rec", "best_val_ppl", "test_ppl",
               "mc_test_ppl", "epochs", "diverged_step", "wall_s", "train_tokens_per_s"]
TRIAL_COLUMNS = ["scheme", "cell", "seed", "status", "rate_ff", "rate_rec", "best_val_ppl", "diverged_step", "wall_s"]


def group_rates(plan_json: Any) -> dict[str, float]:
    """``{"rate_ff", "rate_rec"}`` of a run, read from the plan it ran (``summary.json``'s ``plan``).

    A group the plan has no site of is NaN (``naive`` has no recurrent site, ``none`` no site),
    so a table never shows a rate the model did not apply.
    """
    plan = json.loads(plan_json) if isinstance(plan_json, str) and plan_json else {}
    sites = (plan or {}).get("sites") or {}
    rates = {}
    for group in ("ff", "rec"):
        values = [s["rate"] for s in sites.values() if s.get("group") == group and s.get("rate")]
        rates[f"rate_{group}"] = max(values) if values else math.nan
    return rates


def settings_of(runs: pd.DataFrame) -> list[str]:
    """The settings in the order the study ran them (the first is the one tuned in)."""
    return list(dict.fromkeys(runs.setting))


def _scores(runs: pd.DataFrame, setting: str, cell: str, scheme: str, column: str = "test_ppl") -> pd.Series:
    rows = runs[(runs.setting == setting) & (runs.cell == cell) & (runs.scheme == scheme) & (runs.status == "finished")]
    return rows.set_index("seed")[column].astype(float)


def best_on_validation(runs: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Per (setting, cell), the scheme with the lowest mean best-validation perplexity.

    Only schemes whose seeds all finished qualify; test perplexity is never read here.
    """
    best: dict[tuple[str, str], str] = {}
    for (setting, cell), rows in runs.groupby(["setting", "cell"], sort=False):
        complete = rows.groupby("scheme").filter(lambda g: (g.status == "finished").all())
        if not complete.empty:
            best[(str(setting), str(cell))] = str(complete.groupby("scheme")["best_val_ppl"].mean().idxmin())
    return best


def _cells(runs: pd.DataFrame) -> list[str]:
    return ordered(runs.cell, CELL_ORDER)


def _schemes(rows: pd.DataFrame) -> list[str]:
    return ordered(rows.scheme, SCHEME_ORDER)


def headline(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting x cell x scheme, best test mean first within a cell."""
    best = best_on_validation(runs)
    rows = []
    for setting in settings_of(runs):
        for cell in _cells(runs):
            here = runs[(runs.setting == setting) & (runs.cell == cell)]
            for scheme in _schemes(here):
                group = here[here.scheme == scheme]
                done = group[group.status == "finished"]
                test = summarise(done.test_ppl.astype(float).to_numpy())
                mc = done.mc_test_ppl.astype(float).dropna()
                rows.append({"setting": setting, "cell": cell, "scheme": scheme,
                             "rate_ff": group.rate_ff.iloc[0], "rate_rec": group.rate_rec.iloc[0],
                             "seeds": len(group), "finished": len(done),
                             "diverged": int((group.status == "diverged").sum()),
                             "val_mean": float(done.best_val_ppl.mean()) if len(done) else math.nan,
                             "test_mean": test["mean"], "test_sd": test["sd"], "test_ci_low": test["ci_low"],
                             "test_ci_high": test["ci_high"],
                             "mc_test_mean": float(mc.mean()) if len(mc) else math.nan,
                             "best_on_val": best.get((setting, cell)) == scheme})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {(s, c): i for i, (s, c) in enumerate((s, c) for s in settings_of(runs) for c in _cells(runs))}
    table["_block"] = [order[(s, c)] for s, c in zip(table.setting, table.cell)]
    table["_score"] = table.test_mean.fillna(math.inf)
    return table.sort_values(["_block", "_score"], kind="stable").drop(columns=["_block", "_score"]).reset_index(drop=True)


def comparisons(runs: pd.DataFrame, setting: str, cell: str, best: str | None) -> list[tuple[str, str, str]]:
    """``(scheme, against, why)`` for one setting and cell, each unordered pair once.

    ``none``: does the scheme help at all; ``naive``: does its recurrent part add to the shared
    footing; ``best``: how far it is from the validation-best scheme.
    """
    schemes = _schemes(runs[(runs.setting == setting) & (runs.cell == cell)])
    seen: set[frozenset[str]] = set()
    out = []
    for why, reference in (("none", "none"), ("naive", "naive"), ("best", best)):
        if reference is None or reference not in schemes:
            continue
        for scheme in schemes:
            pair = frozenset((scheme, reference))
            if scheme == reference or scheme == "none" or pair in seen:
                continue
            seen.add(pair)
            out.append((scheme, reference, why))
    return out


def paired_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every comparison of every setting; ``p_holm`` adjusts ``p_exact`` over the setting's family."""
    best = best_on_validation(runs)
    rows = []
    for setting in settings_of(runs):
        family = []
        for cell in _cells(runs):
            for scheme, against, why in comparisons(runs, setting, cell, best.get((setting, cell))):
                r = paired(_scores(runs, setting, cell, scheme), _scores(runs, setting, cell, against))
                family.append({"setting": setting, "cell": cell, "scheme": scheme, "against": against,
                               "why": why, **r})
        for row, adjusted in zip(family, holm([r["p_exact"] for r in family])):
            row["p_holm"] = adjusted
        rows.extend(family)
    return pd.DataFrame(rows, columns=["setting", "cell", "scheme", "against", "why", "pairs", "diff", "diff_low",
                                       "diff_high", "p_t", "p_exact", "p_holm", "wins"])


def mc_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting x cell x scheme, MC-dropout minus standard test perplexity over the same seeds.

    Gal & Ghahramani (2016, eq. 4) average the predictive distribution over sampled masks;
    their theory motivates it for the variational scheme. Holm over the whole table.
    """
    rows = []
    for setting in settings_of(runs):
        for cell in _cells(runs):
            for scheme in _schemes(runs[(runs.setting == setting) & (runs.cell == cell)]):
                mc = _scores(runs, setting, cell, scheme, "mc_test_ppl").dropna()
                if mc.empty:
                    continue
                test = _scores(runs, setting, cell, scheme)
                r = paired(mc, test)
                rows.append({"setting": setting, "cell": cell, "scheme": scheme, "test_mean": float(test.mean()),
                             "mc_mean": float(mc.mean()), **r})
    table = pd.DataFrame(rows, columns=["setting", "cell", "scheme", "test_mean", "mc_mean", "pairs", "diff",
                                        "diff_low", "diff_high", "p_t", "p_exact", "wins"])
    table["p_holm"] = holm(table.p_exact.tolist()) if len(table) else []
    return table


def verdict(row: Any) -> str:
    """``better``, ``worse`` (the scheme against its reference, significant at ALPHA after Holm) or ``n.s.``."""
    if isinstance(row.p_holm, float) and not math.isnan(row.p_holm) and row.p_holm < ALPHA:
        return "better" if row.diff < 0 else "worse"
    return "n.s."


def survival(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each comparison's verdict in every setting, and whether a significant one holds in all.

    A comparison exists in a setting only if it was made there (the best scheme can differ);
    ``holds`` is true when it is significant with the same sign in every setting.
    """
    settings = list(dict.fromkeys(pairs.setting))
    rows = []
    for (cell, scheme, against), group in pairs.groupby(["cell", "scheme", "against"], sort=False):
        by_setting = {r.setting: verdict(r) for r in group.itertuples()}
        verdicts = [by_setting.get(s, "-") for s in settings]
        rows.append({"cell": cell, "scheme": scheme, "against": against,
                     **{f"verdict_{s}": v for s, v in zip(settings, verdicts)},
                     "holds": verdicts[0] in ("better", "worse") and len(set(verdicts)) == 1})
    return pd.DataFrame(rows, columns=["cell", "scheme", "against", *(f"verdict_{s}" for s in settings), "holds"])


def rank_stability(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and each later setting, Kendall's tau between its ranking and the first setting's.

    Schemes are scored by mean test perplexity; one with no finished seed scores +inf (ranks
    last, tied with any other such scheme). Only schemes present in both settings are ranked.
    """
    settings = settings_of(runs)
    head = headline(runs)
    rows = []
    for cell in _cells(runs):
        first = head[(head.setting == settings[0]) & (head.cell == cell)].set_index("scheme").test_mean.fillna(math.inf)
        for other in settings[1:]:
            second = head[(head.setting == other) & (head.cell == cell)].set_index("scheme").test_mean.fillna(math.inf)
            common = [s for s in first.index if s in second.index]
            a, b = first[common], second[common]
            finite = pd.concat([a, b]).replace(math.inf, math.nan).max()
            a, b = a.replace(math.inf, finite * 10), b.replace(math.inf, finite * 10)  # ties at the bottom
            tau, p = kendall_tau(a.to_numpy(), b.to_numpy())
            rows.append({"cell": cell, "settings": f"{settings[0]} vs {other}", "schemes": len(common),
                         "kendall_tau": tau, "p": p, f"ranking_{settings[0]}": " < ".join(a.sort_values().index),
                         f"ranking_{other}": " < ".join(b.sort_values().index)})
    return pd.DataFrame(rows)


# --- formats ----------------------------------------------------------------------------


def fmt_rate(value: Any) -> str:
    """A rate as given: 0.3, 0.55 (never rounded to a column-wide precision)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


def fmt_ppl(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def fmt_signed(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.1f}"


def fmt_p(value: Any) -> str:
    """``<0.001``, or three significant digits (0.0234, 0.150)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return "<0.001" if value < 0.001 else f"{value:#.3g}"


def fmt_tau(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.2f}"


def _interval(low: float, high: float, fmt: Callable[[Any], str] = fmt_ppl) -> str:
    return "-" if math.isnan(low) else f"[{fmt(low)}, {fmt(high)}]"


def _difference(r: Any) -> str:
    if math.isnan(r.diff):
        return "no finished pair"
    return f"{fmt_signed(r.diff)} {_interval(r.diff_low, r.diff_high, fmt_signed)}"


Display = pd.DataFrame  # strings under readable headers: what Markdown and LaTeX print
TEXT_COLUMNS = {"setting", "cell", "scheme", "against", "settings"}


def on_edge(rate: Any, grid: Sequence[float] | None) -> bool:
    """Whether a tuned rate sits on the end of its grid, where the optimum may lie beyond it."""
    return bool(grid) and isinstance(rate, float) and not math.isnan(rate) and len(grid) > 1 and \
        any(math.isclose(rate, end) for end in (min(grid), max(grid)))


def headline_display(table: pd.DataFrame, grid: dict[str, Sequence[float]] | None = None) -> Display:
    """The headline's strings; a tuned rate on the end of its grid is marked with a dagger."""
    grid = grid or {}
    rows = []
    for r in table.itertuples():
        status = f"{r.finished}/{r.seeds}" + (f" ({r.diverged} diverged)" if r.diverged else "")
        rate = {g: fmt_rate(getattr(r, f"rate_{g}")) + ("†" if on_edge(getattr(r, f"rate_{g}"), grid.get(g)) else "")
                for g in ("ff", "rec")}
        rows.append({"setting": r.setting, "cell": r.cell, "scheme": f"**{r.scheme}**" if r.best_on_val else r.scheme,
                     "rate ff": rate["ff"], "rate rec": rate["rec"], "val ppl": fmt_ppl(r.val_mean),
                     "test ppl, mean ± sd": "diverged" if r.finished == 0 else f"{fmt_ppl(r.test_mean)} ± {fmt_ppl(r.test_sd)}",
                     "95 % CI": _interval(r.test_ci_low, r.test_ci_high), "MC test ppl": fmt_ppl(r.mc_test_mean),
                     "finished": status})
    return pd.DataFrame(rows)


def paired_display(table: pd.DataFrame) -> Display:
    return pd.DataFrame([{"setting": r.setting, "cell": r.cell, "scheme": r.scheme, "against": r.against,
                          "Δ test ppl [95 % CI]": _difference(r), "p (t)": fmt_p(r.p_t), "p (exact)": fmt_p(r.p_exact),
                          "p (Holm)": fmt_p(r.p_holm), "seeds won": f"{r.wins}/{r.pairs}"} for r in table.itertuples()],
                        columns=["setting", "cell", "scheme", "against", "Δ test ppl [95 % CI]", "p (t)", "p (exact)",
                                 "p (Holm)", "seeds won"])


def mc_display(table: pd.DataFrame) -> Display:
    return pd.DataFrame([{"setting": r.setting, "cell": r.cell, "scheme": r.scheme, "test ppl": fmt_ppl(r.test_mean),
                          "MC test ppl": fmt_ppl(r.mc_mean), "Δ MC − standard [95 % CI]": _difference(r),
                          "p (exact)": fmt_p(r.p_exact), "p (Holm)": fmt_p(r.p_holm),
                          "seeds MC won": f"{r.wins}/{r.pairs}"} for r in table.itertuples()],
                        columns=["setting", "cell", "scheme", "test ppl", "MC test ppl", "Δ MC − standard [95 % CI]",
                                 "p (exact)", "p (Holm)", "seeds MC won"])


def rank_display(table: pd.DataFrame) -> Display:
    rows = []
    for r in table.to_dict("records"):
        rankings = {k.removeprefix("ranking_"): v for k, v in r.items() if k.startswith("ranking_")}
        rows.append({"cell": r["cell"], "settings": r["settings"], "schemes": str(r["schemes"]),
                     "Kendall's τ": fmt_tau(r["kendall_tau"]), "p": fmt_p(r["p"]),
                     **{f"ranking, {k} (best first)": v for k, v in rankings.items()}})
    return pd.DataFrame(rows)


def survival_display(table: pd.DataFrame) -> Display:
    rows = []
    for r in table.to_dict("records"):
        verdicts = {k.removeprefix("verdict_"): v for k, v in r.items() if k.startswith("verdict_")}
        rows.append({"cell": r["cell"], "scheme": r["scheme"], "against": r["against"], **verdicts,
                     "holds in every setting": "yes" if r["holds"] else "no"})
    return pd.DataFrame(rows)


def markdown(display: Display) -> str:
    """A GitHub table: text columns left, the rest right-aligned."""
    if display.empty:
        return "(no rows)\n"
    align = ["---" if c in TEXT_COLUMNS or c.startswith("ranking") else "---:" for c in display.columns]
    lines = ["| " + " | ".join(display.columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in display.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# "<" too: in LaTeX's default text font encoding it prints as an inverted exclamation mark.
LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "τ": r"$\tau$", "−": "$-$", "†": r"$^\dagger$", "<": "$<$"}


def latex(display: Display, caption: str) -> str:
    """booktabs LaTeX of the same strings the Markdown prints (pandas' Styler).

    Text columns left, numbers right; bold kept as ``\textbf``; the symbols the headers and
    cells use written as math, so the table compiles without a Unicode engine.
    """
    shown = display.map(lambda v: v.replace("**", "\x00") if isinstance(v, str) else v)
    styler = shown.style.format(escape="latex").format_index(escape="latex", axis=1).hide(axis="index")
    align = "".join("l" if c in TEXT_COLUMNS or c.startswith("ranking") else "r" for c in display.columns)
    text = styler.to_latex(hrules=True, caption=caption, position_float="centering", column_format=align)
    while "\x00" in text:
        text = text.replace("\x00", "\\textbf{", 1).replace("\x00", "}", 1)
    for symbol, tex in LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text


def csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False, float_format="%.6g")


def render_tables(runs: pd.DataFrame, grid: dict[str, Sequence[float]] | None = None) -> dict[str, str]:
    """Every table file's text, from the seeded runs alone (and the tuning grid, to mark its edges)."""
    head, pairs, mc, ranks = headline(runs), paired_table(runs), mc_table(runs), rank_stability(runs)
    alive = survival(pairs)
    files: dict[str, str] = {}
    for name, table, display, caption in (
            ("headline", head, headline_display(head, grid), "Test perplexity over seeds at each scheme's tuned "
             "rates (bold: best on validation; a dagger: a rate on the end of its tuning grid)."),
            ("paired", pairs, paired_display(pairs), "Paired differences in test perplexity over seeds; "
             "p (Holm): the exact p adjusted over the setting's comparisons."),
            ("mc", mc, mc_display(mc), "MC-dropout test perplexity against the standard one, paired over seeds."),
            ("rank_stability", ranks, rank_display(ranks), "Kendall's tau between the settings' rankings."),
            ("survival", alive, survival_display(alive), "Significant comparisons (Holm-adjusted exact p < 0.05) "
             "in each setting.")):
        files[f"{name}.md"] = markdown(display)
        files[f"{name}.csv"] = csv(table)
        files[f"{name}.tex"] = latex(display, caption)
    return files


def table_names() -> Sequence[str]:
    return [f"{n}.{ext}" for n in ("headline", "paired", "mc", "rank_stability", "survival") for ext in ("md", "csv", "tex")]
