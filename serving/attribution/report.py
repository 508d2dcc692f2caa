"""The A/B decision report: per variant rates with intervals, the tests of the differences,
the power at the current traffic, and a verdict (``patron ab report``, ``GET
/admin/experiments``, ``patron models promote --require-online``).

Units are answers (what the split assigns): conversion is converted answers per answer, CTR
clicked answers per impression (answers shown; null until impressions are reported), revenue
per answer the attributed revenue over all answers. The verdict is the test of the primary
metric (conversion by default) at the configured confidence: "challenger better", "challenger
worse" or "not yet decidable". It is a fixed-horizon test: looking every day and stopping at
the first significant day makes false verdicts likelier than 1 - confidence, so decide at the
traffic the report says the target lift needs (``needed_per_variant``).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from serving.attribution.ids import NO_CHALLENGER, versions_of
from serving.attribution.stats import (
    Comparison,
    bootstrap_means,
    minimum_detectable_effect,
    needed_per_variant,
    two_proportions,
    wilson,
)
from serving.attribution.store import METRICS, Totals

VARIANTS = ("champion", "challenger")
PRIMARY = ("conversion", "ctr", "revenue_per_answer")
BETTER, WORSE, UNDECIDED = "challenger better", "challenger worse", "not yet decidable"


def days_between(since: date, until: date) -> list[str]:
    """Counter days from since to until, both included (``yyyymmdd``)."""
    if until < since:
        raise ValueError(f"--until {until} is before --since {since}")
    return [(since + timedelta(d)).strftime("%Y%m%d") for d in range((until - since).days + 1)]


def choose_experiment(totals: Totals, experiment: str | None) -> str | None:
    """The named experiment, else the one with a challenger and the most answers (else the
    one with the most answers)."""
    if experiment is not None:
        return experiment
    sized = [
        (exp.split("~", 1)[-1] != NO_CHALLENGER, sum(v.get("answers", 0) for v in by.values()), exp)
        for exp, by in totals.counts.items()
    ]
    return max(sized)[2] if sized else None


def variant_summary(c: dict[str, float], confidence: float) -> dict[str, Any]:
    """A variant's counters with its rates and their Wilson intervals."""
    answers, shown = c["answers"], c["impressions"]
    out: dict[str, Any] = {m: (int(c[m]) if m != "revenue" else round(c[m], 2)) for m in METRICS}
    out["conversion"] = c["converted"] / answers if answers else None
    out["conversion_ci"] = wilson(c["converted"], answers, confidence)
    out["ctr"] = c["clicked"] / shown if shown else None
    out["ctr_ci"] = wilson(c["clicked"], shown, confidence)
    out["revenue_per_answer"] = c["revenue"] / answers if answers else None
    return out


def build_report(
    totals: Totals,
    *,
    experiment: str | None = None,
    confidence: float = 0.95,
    metric: str = "conversion",
    target_lift: float = 0.10,
    power: float = 0.8,
    seed: int = 0,
) -> dict[str, Any]:
    """The report as a JSON-ready dict (``variants``, ``tests``, ``power``, ``verdict``)."""
    if metric not in PRIMARY:
        raise ValueError(f"metric: one of {', '.join(PRIMARY)}, got {metric!r}")
    exp = choose_experiment(totals, experiment)
    by = totals.counts.get(exp, {}) if exp else {}
    counts = {v: {**dict.fromkeys(METRICS, 0.0), **by.get(v, {})} for v in VARIANTS}
    a, b = counts["champion"], counts["challenger"]
    revenues = totals.revenues.get(exp, {}) if exp else {}
    tests: dict[str, Comparison] = {
        "conversion": two_proportions(
            "conversion", a["converted"], a["answers"], b["converted"], b["answers"], confidence
        ),
        "ctr": two_proportions(
            "ctr", a["clicked"], a["impressions"], b["clicked"], b["impressions"], confidence
        ),
        "revenue_per_answer": bootstrap_means(
            "revenue_per_answer",
            revenues.get("champion", []),
            int(a["answers"]),
            revenues.get("challenger", []),
            int(b["answers"]),
            confidence,
            seed=seed,
        ),
    }
    base = a["converted"] / a["answers"] if a["answers"] else 0.0
    mde = minimum_detectable_effect(base, a["answers"], b["answers"], confidence, power)
    primary = tests[metric]
    if primary.diff is None or b["answers"] == 0:
        verdict, why = UNDECIDED, "no answers from one of the variants yet"
    elif primary.significant(confidence):
        verdict = BETTER if primary.diff > 0 else WORSE
        why = f"{metric} differs at p = {primary.p_value:.4g} < {1 - confidence:.4g}"
    else:
        verdict = UNDECIDED
        why = f"{metric} difference not significant (p = {primary.p_value:.4g})"
    champion_v, challenger_v = versions_of(exp) if exp else (None, None)
    return {
        "experiment": exp,
        "champion_version": champion_v,
        "challenger_version": challenger_v,
        "days": sorted(totals.days.get(exp, set())) if exp else [],
        "confidence": confidence,
        "metric": metric,
        "variants": {v: variant_summary(counts[v], confidence) for v in VARIANTS},
        "tests": {k: t.as_dict() for k, t in tests.items()},
        "power": {
            "power": power,
            "mde_conversion": mde,
            "mde_conversion_relative": mde / base if mde is not None and base > 0 else None,
            "target_lift": target_lift,
            "needed_per_variant": needed_per_variant(base, target_lift, confidence, power),
        },
        "verdict": verdict,
        "why": why,
        "experiments": sorted(totals.counts),
    }


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_fmt(x, pct) for x in v) + "]"
    if pct:
        return f"{100 * v:.2f}%"
    return f"{v:,.4g}" if isinstance(v, float) else f"{v:,}"


def table_lines(report: dict[str, Any]) -> list[str]:
    """The report as a plain-text table (the terminal view of ``patron ab report``)."""
    va = report["variants"]
    rows = [
        ("answers", "answers", False),
        ("impressions", "impressions", False),
        ("clicked answers", "clicked", False),
        ("attributed purchases", "purchases", False),
        ("revenue", "revenue", False),
        ("CTR", "ctr", True),
        ("CTR interval", "ctr_ci", True),
        ("conversion", "conversion", True),
        ("conversion interval", "conversion_ci", True),
        ("revenue per answer", "revenue_per_answer", False),
    ]
    lines = [
        f"experiment {report['experiment']}  (confidence {report['confidence']:.0%})",
        f"{'':24}{'champion':>22}{'challenger':>22}",
    ]
    for label, key, pct in rows:
        lines.append(
            f"{label:24}{_fmt(va['champion'][key], pct):>22}{_fmt(va['challenger'][key], pct):>22}"
        )
    for name, t in report["tests"].items():
        ci = _fmt([t["ci_low"], t["ci_high"]], name != "revenue_per_answer")
        lines.append(f"{name:24}diff {_fmt(t['diff'])} {ci}  p={_fmt(t['p_value'])} ({t['test']})")
    pw = report["power"]
    lines.append(
        f"{'power':24}MDE {_fmt(pw['mde_conversion'], True)} absolute; "
        f"{_fmt(pw['needed_per_variant'])} answers per variant detect a "
        f"{pw['target_lift']:+.0%} conversion lift"
    )
    lines.append(f"verdict: {report['verdict']} ({report['why']})")
    return lines


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Conversion and CTR per variant with their intervals, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    for ax, (key, title) in zip(axes, (("conversion", "conversion"), ("ctr", "CTR")), strict=True):
        vals: list[float] = []
        errs: list[list[float]] = [[], []]
        for v in VARIANTS:
            r = report["variants"][v]
            val, ci = r[key] or 0.0, r[f"{key}_ci"] or (0.0, 0.0)
            vals.append(val)
            errs[0].append(max(0.0, val - ci[0]))
            errs[1].append(max(0.0, ci[1] - val))
        ax.bar(VARIANTS, vals, yerr=errs, capsize=6, color=["#888888", "#3366cc"])
        ax.set_title(title)
    fig.suptitle(f"{report['experiment']}: {report['verdict']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
