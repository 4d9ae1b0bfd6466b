"""Before/after comparison of a learned ensemble: per-case metric deltas, regressions, the printed table."""

from __future__ import annotations

import math
from typing import Any, Sequence

EVAL_METRICS = ("dsc", "nsd_2mm", "hd95_mm", "ece_box_15", "nll_box", "auroc_error")
HIGHER_IS_BETTER = {"dsc": True, "nsd_2mm": True, "auroc_error": True, "hd95_mm": False, "ece_box_15": False,
                    "nll_box": False}
REGRESSION_METRICS = ("dsc", "nsd_2mm", "ece_box_15")

def _summary(report: dict) -> dict[str, Any]:
    mean = report["mean"]
    out = {k: mean.get(k) for k in EVAL_METRICS}
    out["boxes"] = report.get("boxes")
    return out


def _delta(new: Any, old: Any) -> float | None:
    if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
        return None
    return float(new) - float(old)


def find_regressions(rows: Sequence[dict], tolerance: float) -> list[dict[str, Any]]:
    """Cases/metrics where the new ensemble is worse than the base by more than ``tolerance``."""
    out = []
    for r in rows:
        for m in REGRESSION_METRICS:
            d = r["delta"].get(m)
            if d is not None and (-d if HIGHER_IS_BETTER[m] else d) > tolerance:
                out.append({"case": r["case"], "role": r["role"], "metric": m, "base": r["base"][m],
                            "new": r["new"][m], "delta": d})
    return out


def format_table(report: dict) -> str:
    """The before/after table (one line per case and metric) plus regression lines."""
    w = max([14] + [len(r["case"]) for r in report["cases"]])
    lines = [f"before/after: {report['base']['name']} {report['base']['version']} -> "
             f"{report['new']['name']} {report['new']['version']}",
             f"{'case':{w}s} {'role':10s} {'metric':12s} {'base':>8s} {'new':>8s} {'delta':>8s}"]

    def f(v: Any, sign: bool = False) -> str:
        return "nan" if v is None or not math.isfinite(v) else (f"{v:+.4f}" if sign else f"{v:.4f}")

    for r in report["cases"]:
        for m in EVAL_METRICS:
            lines.append(f"{r['case']:{w}s} {r['role']:10s} {m:12s} {f(r['base'][m]):>8s} {f(r['new'][m]):>8s} "
                         f"{f(r['delta'][m], True):>8s}")
        lines.append(f"{r['case']:{w}s} {r['role']:10s} {'boxfill_dsc':12s} {f(r['baseline_boxfill_dsc']):>8s}")
    for g in report["regressions"]:
        lines.append(f"REGRESSION {g['case']} ({g['role']}): {g['metric']} {f(g['base'])} -> {f(g['new'])}")
    if not report["regressions"]:
        lines.append(f"no regression beyond {report['regression_tolerance']} in {', '.join(REGRESSION_METRICS)}")
    return "\n".join(lines)
