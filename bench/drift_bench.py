"""Drift checks: false alarms on unchanged traffic and requests needed to flag a shift, per method.

The baseline is built the way ingest builds it (``stats.numeric_summary`` / ``categorical_summary`` on a
training sample: 4 normal features with 10 quantile bins, 1 categorical feature of 60 Zipf-distributed
categories, of which the baseline keeps the top 50 and counts the rest as ``__other__``). Every window
of traffic is binned as the server bins it and judged by ``stats.judge_drift`` (correction holm).

1. False alarms: windows drawn from the training distribution, for each window size and threshold, the
   share of checks that fail (any feature). The baseline is itself a sample, so it is drawn afresh for
   every ``--windows-per-baseline`` windows: the rate printed is over baselines too.
2. Detection: streams with one feature shifted (x0 mean +0.5 sd, x0 +0.2 sd, half of the top category's
   share moved to the 10th); checks at growing request counts; the median over streams of the first
   count from which every later check flags the shifted feature.
3. Defaults: per method the threshold and minSamples such that false alarms per check are at most
   ``--target`` at minSamples and not above it by more than three binomial standard errors at any
   larger window, choosing among those the threshold that flags the two large shifts soonest.

Seeded and deterministic. ``--quick`` is a smaller run for a look (about 20 s here).

    .venv/bin/python bench/drift_bench.py [--windows 3000] [--streams 200] [--seed 11]
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

import numpy as np
from scipy import stats as scipy_stats

from kubeloop import stats

NUMERIC = {"x0": (0.0, 1.0), "x1": (5.0, 2.0), "x2": (-3.0, 0.5), "x3": (100.0, 15.0)}
N_CATEGORIES = 60
ZIPF = 1.1
CATEGORY_NAMES = [f"c{i:02d}" for i in range(N_CATEGORIES)]
CATEGORY_P = (1.0 / np.arange(1, N_CATEGORIES + 1) ** ZIPF) / np.sum(
    1.0 / np.arange(1, N_CATEGORIES + 1) ** ZIPF
)
FEATURES = [*NUMERIC, "cat"]

METHODS: tuple[stats.Method, ...] = ("psi", "js", "ks", "chi2")
THRESHOLDS: dict[str, list[float]] = {
    "psi": [0.1, 0.2, 0.25],
    "js": [0.1, 0.15, 0.2],
    "ks": [0.05, 0.01, 0.001],
    "chi2": [0.05, 0.01, 0.001],
}
SIZES = [50, 100, 150, 200, 300, 500, 1000, 3000]
CHECKS = [50, 75, 100, 150, 200, 300, 400, 500, 700, 1000, 1500, 2000, 3000, 5000, 7000, 10000]


@dataclass(frozen=True)
class Scenario:
    name: str
    feature: str
    mean_shift_sd: float = 0.0  # numeric: mean + this many sd
    category_move: float = 0.0  # categorical: this share of c00's probability moves to c09


SCENARIOS = [
    Scenario("x0 mean +0.5 sd", "x0", mean_shift_sd=0.5),
    Scenario("cat: half of c00's share to c09", "cat", category_move=0.5),
    Scenario("x0 mean +0.2 sd", "x0", mean_shift_sd=0.2),
]
MAIN_SCENARIOS = SCENARIOS[:2]  # the ones the choice of threshold is made on


class World:
    """One training sample and its baseline, and traffic drawn like it (or shifted)."""

    def __init__(self, rng: np.random.Generator, rows: int) -> None:
        features: dict[str, Any] = {}
        for name, (mu, sd) in NUMERIC.items():
            features[name] = stats.numeric_summary(rng.normal(mu, sd, rows))
        names = np.array(CATEGORY_NAMES)[rng.choice(N_CATEGORIES, rows, p=CATEGORY_P)]
        features["cat"] = stats.categorical_summary(names.tolist())
        self.baseline = {"version": 1, "rows": rows, "features": features}
        kept = {c: i for i, c in enumerate(features["cat"]["categories"])}
        # category index -> the server's slot: its place in the baseline's categories, else __other__
        self.slot = np.array([kept.get(c, len(kept)) for c in CATEGORY_NAMES])
        self.bins = {f: len(stats.baseline_counts(features[f], rows)) for f in FEATURES}

    def draw(
        self, rng: np.random.Generator, n: int, scenario: Scenario | None = None
    ) -> dict[str, np.ndarray]:
        """Bin index per request and feature, as the server's counting puts them."""
        out: dict[str, np.ndarray] = {}
        for name, (mu, sd) in NUMERIC.items():
            shift = scenario.mean_shift_sd if scenario and scenario.feature == name else 0.0
            values = rng.normal(mu + shift * sd, sd, n)
            out[name] = np.searchsorted(
                np.asarray(self.baseline["features"][name]["edges"]), values, side="left"
            )
        p = category_p(scenario) if scenario and scenario.feature == "cat" else CATEGORY_P
        out["cat"] = self.slot[rng.choice(N_CATEGORIES, n, p=p)]
        return out

    def counts(self, idx: dict[str, np.ndarray], upto: int | None = None) -> dict[str, list[float]]:
        return {f: np.bincount(idx[f][:upto], minlength=self.bins[f]).tolist() for f in FEATURES}


def category_p(scenario: Scenario) -> np.ndarray:
    p = CATEGORY_P.copy()
    moved = p[0] * scenario.category_move
    p[0] -= moved
    p[9] += moved
    return p


def true_bins(world: World, feature: str, scenario: Scenario | None) -> np.ndarray:
    """Exact probabilities of the bins under the (shifted) distribution: what a window tends to."""
    if feature == "cat":
        p = category_p(scenario) if scenario and scenario.feature == "cat" else CATEGORY_P
        return np.bincount(world.slot, weights=p, minlength=world.bins["cat"])
    mu, sd = NUMERIC[feature]
    shift = scenario.mean_shift_sd if scenario and scenario.feature == feature else 0.0
    edges = np.array([-np.inf, *world.baseline["features"][feature]["edges"], np.inf])
    return np.diff(scipy_stats.norm.cdf(edges, mu + shift * sd, sd))


def measure(world: World, observed: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Per method, per feature: the score (psi, js) or the holm-adjusted p-value (ks, chi2)."""
    out: dict[str, np.ndarray] = {}
    for method in METHODS:
        v = stats.judge_drift(world.baseline, observed, method, min_samples=1, correction="holm")
        assert v.verdict != "inconclusive", v.reason
        vals = [f.score if method in stats.SCORE_METHODS else f.adjusted_p_value for f in v.features]
        out[method] = np.array(vals, dtype=float)
        if method in stats.TEST_METHODS:
            out[f"{method}:none"] = np.array([f.p_value for f in v.features], dtype=float)
    return out


def fails(method: str, values: np.ndarray, threshold: float) -> np.ndarray:
    return values > threshold if method in stats.SCORE_METHODS else values < threshold


def check_binning_matches_the_server(world: World, rng: np.random.Generator) -> None:
    """The bench's vectorised binning is stats.bin_counts / category_counts (what serve and ingest use)."""
    n = 500
    values = {name: rng.normal(mu, sd, n) for name, (mu, sd) in NUMERIC.items()}
    cats = rng.choice(N_CATEGORIES, n, p=CATEGORY_P)
    for name, vals in values.items():
        edges = world.baseline["features"][name]["edges"]
        idx = np.searchsorted(np.asarray(edges), vals, side="left")
        assert np.bincount(idx, minlength=world.bins[name]).tolist() == stats.bin_counts(edges, vals)
    server = stats.category_counts(
        world.baseline["features"]["cat"]["categories"], [CATEGORY_NAMES[i] for i in cats]
    )
    assert np.bincount(world.slot[cats], minlength=world.bins["cat"]).tolist() == server


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=3000, help="windows per size for false alarms")
    ap.add_argument("--windows-per-baseline", type=int, default=50)
    ap.add_argument("--streams", type=int, default=200, help="streams per shift scenario")
    ap.add_argument("--train-rows", type=int, default=10_000)
    ap.add_argument("--target", type=float, default=0.01, help="false alarms per check")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="600 windows, 60 streams")
    args = ap.parse_args()
    if args.quick:
        args.windows, args.streams = 600, 60
    start = time.perf_counter()
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    print(f"$ {shlex.join([python, *sys.argv])}")
    print(
        f"seed {args.seed}; training rows {args.train_rows:,}; {args.windows:,} windows per size "
        f"({args.windows_per_baseline} per baseline); {args.streams} streams per shift; "
        f"false-alarm target {pct(args.target)} per check; correction holm"
    )
    seeds = np.random.SeedSequence(args.seed).spawn(3)
    rng_fa, rng_det, rng_check = (np.random.default_rng(s) for s in seeds)
    n_baselines = math.ceil(args.windows / args.windows_per_baseline)
    worlds = [World(rng_fa, args.train_rows) for _ in range(n_baselines)]
    check_binning_matches_the_server(worlds[0], rng_check)
    bins = worlds[0].bins
    print(f"features: {', '.join(f'{f} ({bins[f]} bins)' for f in FEATURES)}\n")

    # ------------------------------------------------------------------------------ 1. false alarms
    keys = [*METHODS, *(f"{m}:none" for m in stats.TEST_METHODS)]
    null: dict[str, dict[int, np.ndarray]] = {k: {} for k in keys}
    raw_cat_psi: dict[int, list[float]] = {n: [] for n in SIZES}  # on all 51 bins, not pooled
    for n in SIZES:
        rows: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for w in range(args.windows):
            world = worlds[w // args.windows_per_baseline]
            observed = world.counts(world.draw(rng_fa, n))
            got = measure(world, observed)
            for k in keys:
                rows[k].append(got[k])
            raw_cat_psi[n].append(
                stats.psi(
                    stats.baseline_counts(world.baseline["features"]["cat"], world.baseline["rows"]),
                    observed["cat"],
                )
            )
        for k in keys:
            null[k][n] = np.array(rows[k])  # (windows, features)
    se = math.sqrt(args.target * (1 - args.target) / args.windows)
    tolerance = args.target + 3 * se  # a true rate at the target exceeds it 1 time in 700

    print("## Mean score when nothing changed (psi: about (bins - 1) / n)\n")
    print(
        "psi x and js x: mean of the 4 numeric features; the categorical's bins expected to hold fewer than"
    )
    print("5 of the window's values are pooled as judge_drift pools them (the unpooled column is stats.psi")
    print("on all 51 bins).\n")
    print("| n | psi x (10 bins) | 9 / n | psi cat (pooled) | psi cat, 51 bins unpooled | js x | js cat |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in SIZES:
        px, pc = null["psi"][n][:, :4].mean(), null["psi"][n][:, 4].mean()
        jx, jc = null["js"][n][:, :4].mean(), null["js"][n][:, 4].mean()
        raw = float(np.mean(raw_cat_psi[n]))
        print(f"| {n} | {px:.4f} | {9 / n:.4f} | {pc:.4f} | {raw:.4f} | {jx:.4f} | {jc:.4f} |")

    print(f"\n## False alarms per check (any of {len(FEATURES)} features fails), traffic unchanged\n")
    print(
        f"standard error at {pct(args.target)}: {pct(se)}; minSamples below is the first size with at most "
        f"{pct(args.target)} there and at most {pct(tolerance)} (3 standard errors more) at all larger\n"
    )
    print("| method | threshold | " + " | ".join(f"n={n}" for n in SIZES) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in SIZES) + " |")
    rate: dict[tuple[str, float, int], float] = {}
    for m in METHODS:
        for t in THRESHOLDS[m]:
            cells = []
            for n in SIZES:
                r = float(np.mean(fails(m, null[m][n], t).any(axis=1)))
                rate[m, t, n] = r
                cells.append(pct(r))
            print(f"| {m} | {t:g} | " + " | ".join(cells) + " |")

    print("\n## False alarms per feature: mean of the 4 numeric / the categorical\n")
    print("| method | threshold | " + " | ".join(f"n={n}" for n in SIZES) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in SIZES) + " |")
    for m in METHODS:
        for t in THRESHOLDS[m]:
            cells = []
            for n in SIZES:
                f = fails(m, null[m][n], t)
                cells.append(f"{100 * f[:, :4].mean():.2f} / {100 * f[:, 4].mean():.2f}")
            print(f"| {m} | {t:g} | " + " | ".join(cells) + " |")

    print("\n## What the correction buys: ks and chi2 without it (raw p-values), false alarms per check\n")
    print("| method | threshold | " + " | ".join(f"n={n}" for n in SIZES) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in SIZES) + " |")
    for m in stats.TEST_METHODS:
        for t in THRESHOLDS[m][:2]:
            cells = [pct(float(np.mean(fails(m, null[f"{m}:none"][n], t).any(axis=1)))) for n in SIZES]
            print(f"| {m}, correction none | {t:g} | " + " | ".join(cells) + " |")
    print()

    # ---------------------------------------------------------------------------------- 2. detection
    print(
        "## Requests needed to flag a shifted feature: median over streams of the first check from which "
        "every later one flags it (checks at " + ", ".join(map(str, CHECKS)) + ")\n"
    )
    effect_world = worlds[0]
    for sc in SCENARIOS:
        e, a = true_bins(effect_world, sc.feature, None), true_bins(effect_world, sc.feature, sc)
        print(
            f"- {sc.name}: PSI {stats.psi(e, a):.3f}, JS distance {stats.js_distance(e, a):.3f}"
            " (exact bin probabilities)"
        )
    print()
    # at[scenario][method][stream, check]: the shifted feature's score or adjusted p-value at each check
    # (judged once with min_samples=1; thresholds and minSamples are applied below).
    at: dict[str, dict[str, np.ndarray]] = {}
    first_stream: dict[str, tuple[World, dict[str, np.ndarray]]] = {}
    for sc in SCENARIOS:
        fi = FEATURES.index(sc.feature)
        per_method: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
        for s in range(args.streams):
            world = worlds[s % len(worlds)]
            idx = world.draw(rng_det, CHECKS[-1], sc)
            if s == 0:
                first_stream[sc.name] = (world, idx)
            got = [measure(world, world.counts(idx, c)) for c in CHECKS]
            for m in METHODS:
                per_method[m].append(np.array([g[m][fi] for g in got]))
        at[sc.name] = {m: np.array(v) for m, v in per_method.items()}  # (streams, checks)

    def needed(sc: Scenario, m: str, t: float, min_samples: int) -> float:
        """Median over streams of the first check from which every later check flags the feature.

        "Every later" matters for psi and js: a threshold above the shift's own score is crossed at small
        windows by the noise alone (PSI averages about 9 / n more than the shift's), and no longer once
        the window is large, so a single crossing would reward thresholds that cannot see the shift.
        """
        flagged = fails(m, at[sc.name][m], t) & (np.array(CHECKS) >= min_samples)
        # stays[s, i]: flagged at check i and at every later one
        stays = np.flip(np.logical_and.accumulate(np.flip(flagged, axis=1), axis=1), axis=1)
        first = np.where(stays.any(axis=1), np.array(CHECKS)[stays.argmax(axis=1)], np.inf)
        return float(np.median(first))

    def shown(x: float) -> str:
        return f"> {CHECKS[-1]}" if math.isinf(x) else f"{x:g}"

    # ----------------------------------------------------------------------------------- 3. defaults
    candidates = []
    print(
        "| method | threshold | minSamples (false alarms ok from) | worst false alarms from there | "
        + " | ".join(s.name for s in SCENARIOS)
        + " |"
    )
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in SCENARIOS) + " |")
    for m in METHODS:
        for t in THRESHOLDS[m]:
            ok_from = None
            for i, n in enumerate(SIZES):
                # at minSamples itself within the target; beyond it not above it by more than the noise
                if rate[m, t, n] <= args.target and all(rate[m, t, k] <= tolerance for k in SIZES[i:]):
                    ok_from = n
                    break
            if ok_from is None:
                print(f"| {m} | {t:g} | none | | " + " | ".join("" for _ in SCENARIOS) + " |")
                continue
            worst = max(rate[m, t, k] for k in SIZES if k >= ok_from)
            med = [needed(sc, m, t, ok_from) for sc in SCENARIOS]
            candidates.append((m, t, ok_from, worst, med))
            print(f"| {m} | {t:g} | {ok_from} | {pct(worst)} | " + " | ".join(shown(x) for x in med) + " |")

    print(
        "\n## Defaults (threshold: the one that flags the two large shifts soonest; "
        "minSamples: from where false alarms are ok)\n"
    )
    print("| method | threshold | minSamples | in kubeloop.stats |")
    print("| --- | ---: | ---: | --- |")
    mismatch = False
    for m in METHODS:
        mine = [c for c in candidates if c[0] == m]
        if not mine:
            print(f"| {m} | none meets the target | | |")
            continue
        best = min(mine, key=lambda c: (max(c[4][:2]), c[3]))
        same = stats.DEFAULT_THRESHOLD[m] == best[1] and stats.DEFAULT_MIN_SAMPLES[m] == best[2]
        mismatch |= not same
        print(
            f"| {m} | {best[1]:g} | {best[2]} | {stats.DEFAULT_THRESHOLD[m]:g} / "
            f"{stats.DEFAULT_MIN_SAMPLES[m]}{'' if same else ' (differs)'} |"
        )
    # The figures apply thresholds and minSamples after the fact; judge_drift with its defaults must agree.
    agree = 0
    for sc in SCENARIOS:
        world, idx = first_stream[sc.name]
        for i, c in enumerate(CHECKS):
            for m in METHODS:
                v = stats.judge_drift(world.baseline, world.counts(idx, c), m).feature(sc.feature)
                t, floor = stats.DEFAULT_THRESHOLD[m], stats.DEFAULT_MIN_SAMPLES[m]
                expected = bool(fails(m, at[sc.name][m][0, i : i + 1], t)[0]) and c >= floor
                assert (v.verdict == "fail") == expected, (sc.name, m, c, v)
                assert (v.verdict == "inconclusive") == (c < floor), (sc.name, m, c, v)
                agree += 1
    print(f"\njudge_drift with the defaults of kubeloop.stats agrees with these figures at {agree} checks")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nelapsed {time.perf_counter() - start:.0f} s, load average {load}")
    if mismatch:
        print("kubeloop.stats DEFAULT_THRESHOLD / DEFAULT_MIN_SAMPLES differ from what these figures choose")


if __name__ == "__main__":
    main()
