"""The inference pods' NetworkPolicy: who reaches the serving port, read the way an enforcer reads it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubeloop.api.modeldeployment import ModelDeploymentSpec
from kubeloop.builders.serving import CANARY, PORT, STABLE, network_policy, track_selector
from kubeloop.builders.settings import Settings, SettingsError

SHA = "b" * 64
OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeloop-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kubeloop"}},
}
SCRAPER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
SETTINGS = Settings(operator_peer=OPERATOR, metrics_scraper_peer=SCRAPER)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector as the API defines it: every matchLabels pair and every expression holds."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        holds = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not holds:
            return False
    return True


def admits(policy: dict[str, Any], namespace: str, ns_labels: dict[str, str], pod: dict[str, str]) -> bool:
    """Whether a client pod may open a TCP connection to the serving port, per NetworkPolicy semantics."""
    ns_labels = {"kubernetes.io/metadata.name": namespace, **ns_labels}
    for rule in policy["spec"]["ingress"]:
        if {"protocol": "TCP", "port": PORT} not in rule["ports"]:
            continue
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                ns_ok = selects(peer["namespaceSelector"], ns_labels)
            else:  # podSelector alone: the policy's own namespace
                ns_ok = namespace == policy["metadata"]["namespace"]
            if ns_ok and selects(peer.get("podSelector", {}), pod):
                return True
    return False


def policy_for(network: dict[str, Any] | None, settings: Settings = SETTINGS) -> dict[str, Any]:
    spec = {"model": {"uri": "s3://b/models/x", "sha256": SHA}}
    if network is not None:
        spec["network"] = network
    return network_policy(
        name="iris", namespace="ml", spec=ModelDeploymentSpec.model_validate(spec), settings=settings
    )


TEAM = {"namespaceSelector": {"matchLabels": {"team": "fraud"}}}
CLIENTS_IN_ML = {"podSelector": {"matchLabels": {"role": "client"}}}
NOT_SANDBOX = {
    "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["sandbox"]}]},
    "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
}


# (spec.network, client namespace, its labels, the client pod's labels, admitted)
CASES = [
    (None, "ml", {}, {}, True),  # the default: the ModelDeployment's own namespace...
    (None, "other", {}, {}, False),  # ...and no other
    ({}, "other", {}, {}, False),  # network without allowFrom: the same default
    ({"allowFrom": [TEAM]}, "fraud-a", {"team": "fraud"}, {}, True),
    ({"allowFrom": [TEAM]}, "ml", {}, {}, False),  # allowFrom replaces the default
    ({"allowFrom": [CLIENTS_IN_ML]}, "ml", {}, {"role": "client"}, True),
    ({"allowFrom": [CLIENTS_IN_ML]}, "ml", {}, {"role": "batch"}, False),
    ({"allowFrom": [CLIENTS_IN_ML]}, "other", {}, {"role": "client"}, False),  # podSelector alone: own ns
    ({"allowFrom": [NOT_SANDBOX]}, "prod", {"env": "prod"}, {"role": "x"}, True),
    ({"allowFrom": [NOT_SANDBOX]}, "play", {"env": "sandbox"}, {"role": "x"}, False),
    ({"allowFrom": [NOT_SANDBOX]}, "prod", {"env": "prod"}, {}, False),
    ({"allowFrom": [{"namespaceSelector": {}}]}, "anywhere", {}, {}, True),
]


@pytest.mark.parametrize(("network", "namespace", "ns_labels", "pod", "admitted"), CASES)
def test_who_reaches_the_serving_port(
    network: dict[str, Any] | None,
    namespace: str,
    ns_labels: dict[str, str],
    pod: dict[str, str],
    admitted: bool,
) -> None:
    assert admits(policy_for(network), namespace, ns_labels, pod) is admitted


@pytest.mark.parametrize("network", [None, {"allowFrom": [TEAM]}, {"allowFrom": [CLIENTS_IN_ML]}])
def test_the_operator_and_the_scraper_are_always_admitted(network: dict[str, Any] | None) -> None:
    policy = policy_for(network)
    assert admits(policy, "kubeloop-system", {}, {"app.kubernetes.io/name": "kubeloop"})
    assert admits(policy, "monitoring", {}, {"app.kubernetes.io/name": "prometheus"})
    # but only those pods of their namespaces
    assert not admits(policy, "kubeloop-system", {}, {"app.kubernetes.io/name": "something-else"})
    # an operator without peers (run outside the cluster) adds none
    bare = policy_for(network, Settings())
    assert not admits(bare, "kubeloop-system", {}, {"app.kubernetes.io/name": "kubeloop"})


def test_the_policy_covers_both_tracks_the_serving_port_only_and_leaves_egress_alone() -> None:
    policy = policy_for(None)
    assert policy["metadata"] == {
        "name": "iris",
        "namespace": "ml",
        "labels": policy["metadata"]["labels"],
    }
    selector = policy["spec"]["podSelector"]
    for track in (STABLE, CANARY):
        assert selects(selector, track_selector("iris", track)), f"the {track} pods are not covered"
    assert not selects(selector, track_selector("other-model", STABLE))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert [rule["ports"] for rule in policy["spec"]["ingress"]] == [[{"protocol": "TCP", "port": 8080}]]
    assert policy == policy_for(None), "the same spec builds the same policy (no needless re-apply)"


def test_peers_come_from_the_operator_environment() -> None:
    env = {"KUBELOOP_OPERATOR_PEER": json.dumps(OPERATOR), "KUBELOOP_METRICS_SCRAPER_PEER": ""}
    settings = Settings.from_env(env)
    assert settings.operator_peer == OPERATOR and settings.metrics_scraper_peer is None


@pytest.mark.parametrize(
    "value",
    ["{not json", json.dumps({}), json.dumps({"ipBlock": {"cidr": "10.0.0.0/8"}}), json.dumps([OPERATOR])],
)
def test_a_bad_peer_in_the_environment_names_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="KUBELOOP_METRICS_SCRAPER_PEER: not a NetworkPolicy peer"):
        Settings.from_env({"KUBELOOP_METRICS_SCRAPER_PEER": value})
