"""The canary step machine and replica ratio (pure): what a rollout does at each moment of a step."""

from __future__ import annotations

import datetime

import pytest

from kubeloop.analysis import Check
from kubeloop.api.modeldeployment import Rollout
from kubeloop.builders.serving import canary_replicas
from kubeloop.controllers.canary import decide_step, manual, rejected_now

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
SHA = "ab" * 32


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def rollout(**extra: object) -> Rollout:
    return Rollout.model_validate(
        {
            "strategy": "Canary",
            "steps": [{"weight": 20, "pause": "60s"}, {"weight": 50, "pause": "60s"}],
            "analysis": {"maxErrorRate": 0.01},
            "progressDeadline": "5m",
            **extra,
        }
    )


def check(verdict: str, name: str = "errorRate") -> Check:
    return Check(name, verdict, 0.0, 0.01, 500.0, f"{name} {verdict}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("step", "phase", "now", "window", "checks", "order", "action", "reason"),
    [
        # Canary pods not ready: wait, until the deadline from the step's start.
        (0, "Starting", 30, None, [], None, "wait", "Starting"),
        (0, "Starting", 301, None, [], None, "rollback", "DeadlineExceeded"),
        # The window runs for the pause; a verdict before its end does not count.
        (0, "Analysing", 50, 0, [check("fail")], None, "wait", "Analysing"),
        (0, "Analysing", 61, 0, [check("fail")], None, "rollback", "errorRate"),
        (0, "Analysing", 61, 0, [check("pass")], None, "advance", "AnalysisPassed"),
        (1, "Analysing", 61, 0, [check("pass")], None, "promote", "AnalysisPassed"),
        # No evidence holds the step, never promotes it; the deadline rolls back.
        (0, "Analysing", 200, 0, [check("inconclusive")], None, "wait", "Inconclusive"),
        (0, "Analysing", 361, 0, [check("inconclusive")], None, "rollback", "DeadlineExceeded"),
        # A failure wins over an inconclusive check.
        (
            0,
            "Analysing",
            61,
            0,
            [check("inconclusive"), check("fail", "latencyP99")],
            None,
            "rollback",
            "latencyP99",
        ),
        # By hand: abort and promote at any moment.
        (0, "Starting", 1, None, [], "abort", "rollback", "Aborted"),
        (0, "Analysing", 1, 0, [check("fail")], "promote", "promote", "PromotedByHand"),
    ],
)
def test_decide_step(step, phase, now, window, checks, order, action, reason):
    decision = decide_step(
        rollout(), step, phase, at(now), T0, None if window is None else at(window), checks, order
    )
    assert (decision.action, decision.reason) == (action, reason), decision.message


def test_deadline_promotes_only_when_asked():
    decision = decide_step(
        rollout(onDeadline="Promote"), 0, "Analysing", at(400), T0, T0, [check("inconclusive")], None
    )
    assert decision.action == "promote" and decision.reason == "DeadlineExceeded"


def test_without_analysis_a_step_advances_after_its_pause():
    plain = Rollout.model_validate({"strategy": "Canary", "steps": [{"weight": 10, "pause": "30s"}]})
    assert decide_step(plain, 0, "Analysing", at(20), T0, T0, [], None).action == "wait"
    assert decide_step(plain, 0, "Analysing", at(31), T0, T0, [], None).action == "promote"


def test_a_weight_100_step_is_the_promotion():
    r = Rollout.model_validate(
        {"strategy": "Canary", "steps": [{"weight": 30, "pause": "10s"}, {"weight": 100}]}
    )
    assert decide_step(r, 0, "Analysing", at(11), T0, T0, [], None).action == "promote"


@pytest.mark.parametrize(
    ("stable", "weight", "canary"),
    [
        (1, 1, 1),
        (1, 50, 1),
        (4, 20, 1),
        (4, 50, 4),
        (3, 25, 1),
        (10, 10, 1),
        (10, 30, 4),
        (2, 90, 18),
        (1, 100, 9),
        (0, 20, 1),
    ],
)
def test_canary_replicas_never_zero(stable, weight, canary):
    assert canary_replicas(stable, weight) == canary


def test_manual_orders_name_the_digest():
    assert manual({"kubeloop.io/promote": SHA[:12]}, SHA) == "promote"
    assert manual({"kubeloop.io/promote": SHA[:11]}, SHA) is None  # too short to be sure which model
    assert manual({"kubeloop.io/promote": "cd" * 6}, SHA) is None  # another canary's
    assert manual({"kubeloop.io/promote": SHA, "kubeloop.io/abort": SHA.upper()}, SHA) == "abort"


def test_a_rejection_holds_for_its_generation_only():
    rejected = [{"sha256": SHA, "generation": 3, "reason": "errorRate"}]
    assert rejected_now(rejected, SHA, 3) is not None
    assert rejected_now(rejected, SHA, 4) is None
    assert rejected_now(rejected, "cd" * 32, 3) is None


def test_a_rejected_model_falls_back_to_the_serving_one_then_the_one_before() -> None:
    from kubeloop.controllers.modeldeployment import not_rejected

    bad, good, older = ({"uri": f"s3://m/{c}", "sha256": c * 64} for c in "abc")
    rejected = [{"sha256": "a" * 64, "generation": 2, "reason": "Monitor slo", "message": "errorRate: 9 %"}]
    # A canary of the bad model was rolled back: the serving model stays.
    chosen, said = not_rejected(bad, good, older, rejected, 2)
    assert chosen["sha256"] == good["sha256"] and "Monitor slo" in said
    # A Monitor rolled back the model serving: the one before it comes back.
    chosen, _ = not_rejected(bad, bad, good, rejected, 2)
    assert chosen["sha256"] == good["sha256"]
    # Nothing else to serve: it stays, and says so.
    chosen, said = not_rejected(bad, bad, None, rejected, 2)
    assert chosen["sha256"] == bad["sha256"] and "no previous model" in said
    # A new generation of the spec may try it again.
    assert not_rejected(bad, good, older, rejected, 3) == (bad, "")
