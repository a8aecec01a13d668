"""The model report: one self-contained HTML page a person opens to judge a trained model.

Pure: the facts of one run in (``ReportInput``), an HTML string out. The page carries no external CSS,
script or font (it is opened from an artifact store, often offline) and draws its charts as inline SVG.
Every string that comes from data (feature, class and dataset names, params, messages) is escaped: a
feature named ``<script>`` is shown as text, never run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubeloop import contract

MAX_IMPORTANCE_BARS = 20  # a bar chart of hundreds of features says nothing
MAX_MATRIX_CLASSES = 40  # beyond that a cell is too small to read: the table says so instead
MAX_SCATTER_POINTS = 1000  # enough to see the shape; the page stays small
HISTOGRAM_BINS = 20
TOP_CATEGORIES = 5


@dataclass(frozen=True)
class Confusion:
    """Held-out rows counted: ``counts[i][j]`` rows of class ``labels[i]`` predicted as ``labels[j]``."""

    labels: list[str]
    counts: list[list[int]]


@dataclass(frozen=True)
class Residuals:
    """The held-out rows of a regression: what was true and what the model said."""

    actual: list[float]
    predicted: list[float]


@dataclass(frozen=True)
class TrialRow:
    index: int
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    state: str = "Succeeded"


@dataclass(frozen=True)
class ReportInput:
    """Everything the page shows. ``card`` is the model card as written beside the model (lineage,
    metrics, gate verdict, split, params); ``gate`` the run's gate config (minimums, maximums,
    servingMetrics); ``statistics`` the dataset snapshot's statistics (the model's baseline)."""

    card: Mapping[str, Any]
    gate: Mapping[str, Any] = field(default_factory=dict)
    statistics: Mapping[str, Any] = field(default_factory=dict)
    confusion: Confusion | None = None
    residuals: Residuals | None = None
    importance: Mapping[str, float] | None = None
    importance_kind: str = "feature_importances_"
    trials: Sequence[TrialRow] = ()
    best_trial: int | None = None
    objective: str | None = None


def esc(value: object) -> str:
    """Text of any value, safe inside an element or a quoted attribute."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}"


# ------------------------------------------------------------------------------------------- sections


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], table_id: str) -> str:
    """A table of cells already escaped (or built from escaped parts); without a header, the first cell
    of each row is its heading."""
    if header is None:
        body = "".join(
            f"<tr><th>{row[0]}</th>" + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>" for row in rows
        )
        return f'<table id="{table_id}"><tbody>{body}</tbody></table>'
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def gate_checks(metrics: Mapping[str, float], gate: Mapping[str, Any]) -> list[tuple[str, str, float, bool]]:
    """Each bound of the gate as (metric, "min"/"max" and whose, bound, met), judged by the one gate
    function the runtime and the operator use."""
    checks: list[tuple[str, str, float, bool]] = []
    for metric, bound in sorted((gate.get("minimums") or {}).items()):
        checks.append((metric, "minimum", float(bound), contract.gate(metrics, minimums={metric: bound})[0]))
    for metric, bound in sorted((gate.get("maximums") or {}).items()):
        checks.append((metric, "maximum", float(bound), contract.gate(metrics, maximums={metric: bound})[0]))
    for metric, bound in sorted((gate.get("servingMetrics") or {}).items()):
        side = "maximum" if metric in contract.LOWER_IS_BETTER else "minimum"
        met = contract.gate(metrics, serving={metric: bound})[0]
        checks.append((metric, f"serving model's {side}", float(bound), met))
    return checks


def metrics_section(card: Mapping[str, Any], gate: Mapping[str, Any]) -> str:
    metrics: Mapping[str, float] = card.get("metrics") or {}
    checks = gate_checks(metrics, gate)
    rows = []
    for metric in sorted(set(metrics) | {c[0] for c in checks}):
        mine = [c for c in checks if c[0] == metric]
        bounds = "<br>".join(f"{esc(kind)} {number(bound)}" for _, kind, bound, _ in mine) or "-"
        verdict = (
            "-"
            if not mine
            else (
                '<span class="pass">pass</span>'
                if all(c[3] for c in mine)
                else '<span class="fail">fail</span>'
            )
        )
        value = number(metrics[metric]) if metric in metrics else "not computed"
        rows.append([esc(metric), value, bounds, verdict])
    passed = (card.get("gate") or {}).get("passed")
    reasons = (card.get("gate") or {}).get("reasons") or []
    split = card.get("split") or {}
    summary = (
        '<p class="verdict pass">Gate passed</p>'
        if passed
        else '<p class="verdict fail">Gate missed</p>'
        + "".join(f'<p class="reason">{esc(r)}</p>' for r in reasons)
    )
    rows_note = f"<p>Held-out test set: {number(split.get('testRows', '?'))} rows"
    rows_note += f" (trained on {number(split.get('trainRows', '?'))}).</p>"
    return (
        '<section id="metrics-section"><h2>Metrics on the test set</h2>'
        + summary
        + rows_note
        + _table(["Metric", "Value", "Gate", "Verdict"], rows, "metrics")
        + "</section>"
    )


def _blend(fraction: float) -> str:
    """White to blue: the share of a row that fell in this cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * fraction) for c in (31, 94, 168))
    return f"rgb({r},{g},{b})"


def confusion_svg(confusion: Confusion) -> str:
    n = len(confusion.labels)
    if n != len(confusion.counts) or any(len(row) != n for row in confusion.counts):
        raise ValueError(f"a confusion matrix of {n} labels needs {n} rows of {n} counts")
    if n > MAX_MATRIX_CLASSES:
        return f"<p>{n} classes: too many to draw a confusion matrix.</p>"
    cell, left, top = 44, 110, 80
    width, height = left + n * cell + 10, top + n * cell + 10
    parts = [
        f'<svg id="confusion-matrix" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="confusion matrix">',
        f'<text x="{left + n * cell / 2}" y="14" text-anchor="middle" class="axis">predicted</text>',
        f'<text x="12" y="{top + n * cell / 2}" text-anchor="middle" class="axis"'
        f' transform="rotate(-90 12 {top + n * cell / 2})">actual</text>',
    ]
    for j, label in enumerate(confusion.labels):
        x = left + j * cell + cell / 2
        parts.append(
            f'<text x="{x}" y="{top - 8}" text-anchor="start" class="tick"'
            f' transform="rotate(-45 {x} {top - 8})">{esc(_short(label))}</text>'
        )
    for i, (label, row) in enumerate(zip(confusion.labels, confusion.counts, strict=True)):
        y = top + i * cell
        total = sum(row) or 1
        parts.append(
            f'<text x="{left - 6}" y="{y + cell / 2 + 4}" text-anchor="end" class="tick">'
            f"{esc(_short(label))}</text>"
        )
        for j, count in enumerate(row):
            share = count / total
            ink = "#fff" if share > 0.5 else "#111"
            parts.append(
                f'<rect x="{left + j * cell}" y="{y}" width="{cell}" height="{cell}"'
                f' fill="{_blend(share)}" stroke="#ccc"/>'
                f'<text x="{left + j * cell + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle"'
                f' fill="{ink}" class="count">{int(count)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str, limit: int = 14) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "~"


def _every(count: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` of ``count`` values, spread evenly (deterministic)."""
    if count <= limit:
        return list(range(count))
    step = count / limit
    return [int(k * step) for k in range(limit)]


def _scale(lo: float, hi: float, a: float, b: float) -> tuple[float, float]:
    """Slope and offset mapping [lo, hi] onto [a, b]; a constant range maps to the middle."""
    if hi <= lo:
        return 0.0, (a + b) / 2
    slope = (b - a) / (hi - lo)
    return slope, a - lo * slope


def residuals_svg(residuals: Residuals) -> str:
    actual, predicted = residuals.actual, residuals.predicted
    if len(actual) != len(predicted):
        raise ValueError(f"{len(actual)} actual values but {len(predicted)} predicted ones")
    finite = [(a, p) for a, p in zip(actual, predicted, strict=True) if math.isfinite(a) and math.isfinite(p)]
    if not finite:
        return "<p>No held-out rows to plot.</p>"
    size, pad = 360, 48
    lo = min(min(a, p) for a, p in finite)
    hi = max(max(a, p) for a, p in finite)
    sx, ox = _scale(lo, hi, pad, size - 10)
    sy, oy = _scale(lo, hi, size - pad, 10)
    points = "".join(
        f'<circle cx="{ox + sx * p:.1f}" cy="{oy + sy * a:.1f}" r="2.5"/>'
        for a, p in (finite[i] for i in _every(len(finite), MAX_SCATTER_POINTS))
    )
    scatter = (
        f'<svg id="predicted-vs-actual" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}"'
        f' viewBox="0 0 {size} {size}" role="img" aria-label="predicted against actual">'
        f'<rect x="{pad}" y="10" width="{size - pad - 10}" height="{size - pad - 10}" class="frame"/>'
        f'<line x1="{ox + sx * lo:.1f}" y1="{oy + sy * lo:.1f}"'
        f' x2="{ox + sx * hi:.1f}" y2="{oy + sy * hi:.1f}" class="diagonal"/>'
        f'<g class="points">{points}</g>'
        f'<text x="{(pad + size) / 2}" y="{size - 12}" text-anchor="middle" class="axis">predicted</text>'
        f'<text x="14" y="{size / 2}" text-anchor="middle" class="axis"'
        f' transform="rotate(-90 14 {size / 2})">actual</text>'
        f'<text x="{pad}" y="{size - pad + 14}" class="tick">{number(lo)}</text>'
        f'<text x="{size - 10}" y="{size - pad + 14}" text-anchor="end" class="tick">{number(hi)}</text>'
        "</svg>"
    )
    errors = [a - p for a, p in finite]
    return scatter + _histogram_svg(errors, "residuals-histogram", "actual - predicted")


def _histogram_svg(values: Sequence[float], svg_id: str, label: str) -> str:
    lo, hi = min(values), max(values)
    width = (hi - lo) / HISTOGRAM_BINS or 1.0
    counts = [0] * HISTOGRAM_BINS
    for v in values:
        counts[min(int((v - lo) / width), HISTOGRAM_BINS - 1)] += 1
    w, h, pad = 420, 260, 40
    bar = (w - pad - 10) / HISTOGRAM_BINS
    sy, oy = _scale(0, max(counts), h - pad, 10)
    bars = "".join(
        f'<rect x="{pad + k * bar:.1f}" y="{oy + sy * c:.1f}" width="{bar - 1:.1f}"'
        f' height="{(h - pad) - (oy + sy * c):.1f}" class="bar"><title>{c}</title></rect>'
        for k, c in enumerate(counts)
    )
    return (
        f'<svg id="{svg_id}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"'
        f' viewBox="0 0 {w} {h}" role="img" aria-label="{esc(label)} histogram">'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" class="frame"/>{bars}'
        f'<text x="{(pad + w) / 2}" y="{h - 8}" text-anchor="middle" class="axis">{esc(label)}</text>'
        f'<text x="{pad}" y="{h - pad + 14}" class="tick">{number(lo)}</text>'
        f'<text x="{w - 10}" y="{h - pad + 14}" text-anchor="end" class="tick">{number(hi)}</text>'
        f'<text x="{pad - 4}" y="16" text-anchor="end" class="tick">{max(counts)}</text>'
        "</svg>"
    )


def importance_svg(importance: Mapping[str, float]) -> str:
    ranked = sorted(importance.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:MAX_IMPORTANCE_BARS]
    top = max((abs(v) for _, v in ranked), default=0.0) or 1.0
    row, left, w = 22, 170, 560
    h = len(ranked) * row + 10
    parts = [
        f'<svg id="feature-importance" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"'
        f' viewBox="0 0 {w} {h}" role="img" aria-label="feature importance">'
    ]
    for k, (name, value) in enumerate(ranked):
        y = 5 + k * row
        length = (w - left - 70) * abs(value) / top
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" class="tick">{esc(_short(name, 24))}'
            f"<title>{esc(name)}</title></text>"
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" class="bar"/>'
            f'<text x="{left + length + 4:.1f}" y="{y + 15}" class="tick">{number(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _params(params: Mapping[str, Any] | None) -> str:
    return esc(", ".join(f"{k}={json.dumps(v)}" for k, v in sorted((params or {}).items())) or "defaults")


def trials_section(data: ReportInput) -> str:
    if not data.trials:
        return ""
    names = sorted({m for t in data.trials for m in t.metrics})
    if data.objective and data.objective in names:  # the objective first: it decided the winner
        names.remove(data.objective)
        names.insert(0, data.objective)
    rows = [
        [
            str(t.index) + (' <span class="pass">best</span>' if t.index == data.best_trial else ""),
            esc(t.state),
            _params(t.params),
            *(number(t.metrics[m]) if m in t.metrics else "-" for m in names),
        ]
        for t in sorted(data.trials, key=lambda t: t.index)
    ]
    header = [
        "Trial",
        "State",
        "Params",
        *(esc(n) + (" (objective)" if n == data.objective else "") for n in names),
    ]
    note = ""
    if len(data.trials) == 1 and data.best_trial is None:
        note = (
            "<p>This model is one trial of a search; each trial runs in its own pod and writes its own"
            " model. The TrainingJob's status lists every trial and the one that won.</p>"
        )
    return "<section><h2>Trials</h2>" + note + _table(header, rows, "trials") + "</section>"


def statistics_section(statistics: Mapping[str, Any], features: Sequence[str]) -> str:
    stats: Mapping[str, Any] = statistics.get("features") or {}
    if not stats:
        return ""
    rows = []
    for name in list(features) + sorted(set(stats) - set(features)):
        if name not in stats:
            continue
        s = stats[name]
        used = "yes" if name in features else "no"
        if s.get("kind") == "numeric":
            summary = ", ".join(
                f"{k} {number(s[k])}" for k in ("min", "max", "mean", "std") if s.get(k) is not None
            )
        else:
            pairs = sorted(
                zip(s.get("categories") or [], s.get("counts") or [], strict=False), key=lambda p: -p[1]
            )
            summary = ", ".join(f"{esc(c)} ({number(n)})" for c, n in pairs[:TOP_CATEGORIES])
            if len(pairs) > TOP_CATEGORIES:
                summary += f", ... {len(pairs) - TOP_CATEGORIES} more"
        rows.append([esc(name), esc(s.get("kind", "?")), used, number(s.get("nulls", 0)), summary or "-"])
    target = statistics.get("target")
    title = f"<p>{number(statistics.get('rows', '?'))} rows in the snapshot"
    if target and statistics.get("targetName"):
        title += f"; target column {esc(statistics['targetName'])} ({esc(target.get('kind', '?'))})"
    title += ".</p>"
    return (
        "<section><h2>Dataset statistics</h2>"
        + title
        + _table(["Column", "Kind", "Feature", "Nulls", "Summary"], rows, "statistics")
        + "</section>"
    )


def lineage_section(card: Mapping[str, Any]) -> str:
    dataset = card.get("dataset") or {}
    versions = card.get("libraryVersions") or {}
    rows = [
        ["Dataset", esc(dataset.get("name", "?"))],
        ["Dataset version", esc(dataset.get("version", "?"))],
        ["Dataset content hash", f"<code>{esc(dataset.get('sha256', '?'))}</code>"],
        ["Snapshot", f"<code>{esc(dataset.get('artifactURI', '?'))}</code>"],
        ["TrainingJob", esc(f"{card.get('namespace', '?')}/{card.get('trainingJob', '?')}")],
        ["Estimator", esc(card.get("estimator", "?"))],
        ["Params", _params(card.get("params"))],
        ["Model sha256", f"<code>{esc(card.get('sha256', '?'))}</code>"],
        ["Trained at", esc(card.get("createdAt", "?"))],
        ["Libraries", esc(", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "?")],
    ]
    return "<section><h2>Lineage</h2>" + _table(None, rows, "lineage") + "</section>"


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1000px;color:#111;
background:#fff;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}
h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}th,td{border:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f3f5f8}code{font-size:.85em;word-break:break-all}
.pass{color:#106b21;font-weight:600}.fail{color:#b00020;font-weight:600}.verdict{font-size:1.1em}
.reason{color:#b00020;margin:2px 0}.sub{color:#555;margin-top:0}
svg text{font-family:inherit}.axis{font-size:12px;fill:#333}.tick{font-size:11px;fill:#333}
.count{font-size:12px}
.bar{fill:#1f5ea8}.points circle{fill:#1f5ea8;fill-opacity:.55}.frame{fill:none;stroke:#999}
.diagonal{stroke:#b00020;stroke-dasharray:4 3}
"""


def render(data: ReportInput) -> str:
    """The whole page."""
    card = data.card
    task = card.get("task")
    title = f"{card.get('namespace', '?')}/{card.get('trainingJob', '?')}"
    if task == "classification" and data.confusion is not None:
        chart = (
            "<section><h2>Confusion matrix (held-out rows)</h2>"
            "<p>Rows are the actual class, columns the predicted one; shading is the share of the row.</p>"
            + confusion_svg(data.confusion)
            + "</section>"
        )
    elif data.residuals is not None:
        chart = (
            "<section><h2>Residuals (held-out rows)</h2>"
            "<p>Predicted against actual (the dashed line is a perfect model), and the errors' histogram.</p>"
            + residuals_svg(data.residuals)
            + "</section>"
        )
    else:
        chart = ""
    importance = ""
    if data.importance:
        many = len(data.importance) > MAX_IMPORTANCE_BARS
        largest = f"; the {MAX_IMPORTANCE_BARS} largest of {len(data.importance)}" if many else ""
        how = (
            "absolute coefficients, averaged over classes (comparable only when the inputs share a scale)"
            if data.importance_kind == "coef_"
            else "the estimator's feature_importances_"
        )
        importance = (
            f"<section><h2>Feature importance</h2><p>From {how}{largest}.</p>"
            + importance_svg(data.importance)
            + "</section>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Model report: {esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Model report: {esc(title)}</h1>"
        f'<p class="sub">{esc(card.get("estimator", "?"))}, {esc(task or "?")}, model '
        f"<code>{esc(str(card.get('sha256', '?'))[:12])}</code></p>"
        + metrics_section(card, data.gate)
        + chart
        + importance
        + trials_section(data)
        + statistics_section(data.statistics, list(card.get("features") or []))
        + lineage_section(card)
        + "</body></html>\n"
    )
