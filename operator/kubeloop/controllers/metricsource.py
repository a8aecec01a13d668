"""Where the canary analysis and the Monitor read the servers' counters: the pods themselves, or Prometheus.

Both sources give the same thing, a list of ``Scrape`` rounds (when, and each pod's counters), and one
function turns rounds into a ``Window`` of increases, so a verdict cannot depend on the source beyond the
moments the counters were read at. Direct: the operator reads every pod's ``/metrics`` at each look and
keeps the rounds in memory. Prometheus: one subquery over the window, ``{...}[range:step]``, evaluates every
series of the pods at the same step times, which is a scrape round per step; nothing is kept in memory, so a
window survives an operator restart.

Prometheus must scrape the inference pods with the labels ``namespace`` and ``pod`` (the usual relabelling
of ``kubernetes_sd_configs`` role pod, and what a PodMonitor gives). The pods are the ones serving the digest
now (from the operator's cache): the series of a pod deleted before the query are not counted, as nothing in
them says which model it served.
"""

from __future__ import annotations

import datetime
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubeloop import analysis

Obj = dict[str, Any]
QUERY_TIMEOUT = 10.0
# A query answer larger than this is refused rather than parsed (20 features x 10 bins x 3 pods x 60
# steps is about 3 MB).
MAX_ANSWER_BYTES = 64 * 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class SourceError(Exception):
    """The metrics source did not answer usefully; the message says what to fix."""


@dataclass(frozen=True)
class Scrape:
    """One round over the serving pods: when, and each pod's counters with its start time."""

    time: datetime.datetime
    pods: dict[str, tuple[analysis.Sample, str]]  # pod uid -> (sample, pod startTime)


def window(scrapes: Sequence[Scrape], since: datetime.datetime) -> tuple[analysis.Window, float]:
    """The counters' increase over the rounds from ``since`` on, and the seconds they span. Pure.

    A pod that started at or after ``since`` counts from zero (all its requests fall in the window); one that
    was serving before counts from its first round in the window.
    """
    inside = [s for s in scrapes if s.time >= since]
    result = analysis.Window()
    if not inside:
        return result, 0.0
    for scrape in inside:
        for uid, (sample, started) in scrape.pods.items():
            fresh = (
                bool(started)
                and datetime.datetime.strptime(started, TIME_FORMAT).replace(tzinfo=datetime.UTC) >= since
            )
            result.observe(uid, sample, fresh=fresh)
    return result, (inside[-1].time - inside[0].time).total_seconds()


def selector(namespace: str, pods: Sequence[str]) -> str:
    """The PromQL selector of the counters a Window follows, for these pods. Pure."""
    names = "|".join(sorted(analysis.COUNTERS))
    # Pod names are DNS subdomains (a-z, 0-9, '-', '.'): only the dot means something in a regex.
    pattern = "|".join(p.replace(".", r"\.") for p in sorted(pods))
    return f'{{__name__=~"{names}",namespace="{_quote(namespace)}",pod=~"{_quote(pattern)}"}}'


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def unscraped(url: str, namespace: str, pods: Sequence[Obj], at: datetime.datetime) -> list[str]:
    """The names of ``pods`` of which Prometheus holds no sample yet at ``at``.

    A canary's window from Prometheus starts only once every pod has one: the window counts from each pod's
    first round in it, so the requests a new pod answered before Prometheus first scraped it would be lost
    (Prometheus finds a new pod within seconds, and a NetworkPolicy enforcer may admit it later still).
    Raises ``SourceError`` as ``prometheus_scrapes`` does.
    """
    if not pods:
        return []
    names = [p["metadata"]["name"] for p in pods]
    query = f"count by (pod) ({selector(namespace, names)})"
    result = _query(url, query, at)
    if not isinstance(result, dict) or result.get("status") != "success":
        raise SourceError(f"Prometheus at {url} did not answer a successful query")
    seen = {
        str(entry.get("metric", {}).get("pod"))
        for entry in (result.get("data") or {}).get("result") or []
        if isinstance(entry, dict)
    }
    return [n for n in names if n not in seen]


def _query(url: str, query: str, at: datetime.datetime) -> Any:
    """The JSON answer of an instant query at ``at`` (``SourceError`` when Prometheus fails)."""
    params = urllib.parse.urlencode({"query": query, "time": f"{at.timestamp():.3f}"})
    endpoint = f"{url.rstrip('/')}/api/v1/query?{params}"
    try:
        with urllib.request.urlopen(endpoint, timeout=QUERY_TIMEOUT) as answer:
            body = answer.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as error:
        # Prometheus explains a bad query in its JSON body; anything else is told by its status alone.
        raise SourceError(f"Prometheus at {url} answered {error.code}: {_error_of(error)}") from None
    except (OSError, ValueError) as error:
        raise SourceError(f"Prometheus at {url} cannot be reached: {error}"[:300]) from None
    if len(body) > MAX_ANSWER_BYTES:
        raise SourceError(f"Prometheus at {url} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        return json.loads(body)
    except ValueError as error:
        raise SourceError(f"Prometheus at {url}: {error}"[:300]) from None


def prometheus_scrapes(
    url: str,
    namespace: str,
    pods: Sequence[Obj],
    since: datetime.datetime,
    until: datetime.datetime,
    step: float,
) -> list[Scrape]:
    """The rounds of ``pods`` between ``since`` and ``until``, one per ``step`` seconds, from Prometheus.

    Raises ``SourceError`` when Prometheus cannot be reached or answers an error: the caller makes its
    checks inconclusive, never a verdict.
    """
    if not pods:
        return []
    by_name = {p["metadata"]["name"]: p for p in pods}
    seconds = max(math.ceil((until - since).total_seconds()), 1)
    step_s = max(int(step), 1)
    query = f"{selector(namespace, list(by_name))}[{seconds}s:{step_s}s]"
    answer = _query(url, query, until)
    try:
        by_pod = analysis.samples_from_prometheus(answer)
    except ValueError as error:
        raise SourceError(f"Prometheus at {url}: {error}"[:300]) from None
    rounds: dict[float, dict[str, tuple[analysis.Sample, str]]] = {}
    for name, samples in by_pod.items():
        pod = by_name.get(name)
        if pod is None:
            continue
        started = str(pod.get("status", {}).get("startTime", ""))
        for at, sample in samples:
            rounds.setdefault(at, {})[pod["metadata"]["uid"]] = (sample, started)
    return [Scrape(datetime.datetime.fromtimestamp(at, datetime.UTC), rounds[at]) for at in sorted(rounds)]


def _error_of(error: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(error.read(64 * 1024))
    except (OSError, ValueError):
        return str(error.reason)[:200]
    return str(doc.get("error", error.reason) if isinstance(doc, dict) else error.reason)[:200]
