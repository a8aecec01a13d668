"""spec.network.allowFrom: the API server takes NetworkPolicy peers, refuses what a policy could not say."""

from __future__ import annotations

import json
from typing import Any

import pytest

SHA = "0" * 64


def model_deployment(network: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "kubeloop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": {"uri": "s3://b/models/x", "sha256": SHA}, "network": network},
        }
    )


def peer(**selectors: Any) -> dict[str, Any]:
    return {"allowFrom": [selectors]}


# (spec.network, words the API server's message must contain)
INVALID = [
    ({"allowFrom": []}, ["spec.network.allowFrom", "at least 1"]),
    (peer(), ["spec.network.allowFrom[0]", "set namespaceSelector, podSelector or both"]),
    (peer(ipBlock={"cidr": "10.0.0.0/8"}), ['unknown field "spec.network.allowFrom[0].ipBlock"']),
    (
        peer(podSelector={"matchLabels": {"bad key!": "x"}}),
        ["spec.network.allowFrom[0].podSelector.matchLabels", "every key must match"],
    ),
    (
        peer(podSelector={"matchLabels": {"app": "not a value"}}),
        ["spec.network.allowFrom[0].podSelector.matchLabels.app"],
    ),
    (
        peer(namespaceSelector={"matchExpressions": [{"key": "env", "operator": "In"}]}),
        ["spec.network.allowFrom[0].namespaceSelector.matchExpressions[0]", "In and NotIn need values"],
    ),
    (
        peer(namespaceSelector={"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["a"]}]}),
        ["Exists and DoesNotExist take none"],
    ),
    (
        peer(namespaceSelector={"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["a"]}]}),
        ["spec.network.allowFrom[0].namespaceSelector.matchExpressions[0].operator", "Unsupported value"],
    ),
]

VALID = [
    {},
    peer(namespaceSelector={}),
    peer(podSelector={"matchLabels": {"app.kubernetes.io/name": "client"}}),
    peer(
        namespaceSelector={"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["sandbox"]}]},
        podSelector={"matchExpressions": [{"key": "example.com/role", "operator": "Exists"}]},
    ),
]


@pytest.mark.parametrize(("network", "words"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_an_invalid_peer_is_refused_naming_the_field(
    kubectl: Any, namespace: str, network: dict[str, Any], words: list[str]
) -> None:
    result = kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", input=model_deployment(network), check=False
    )
    assert result.returncode != 0, f"the API server accepted spec.network {network}"
    for word in words:
        assert word in result.stderr, f"{word!r} not in the API server's message: {result.stderr}"


@pytest.mark.parametrize("network", VALID, ids=[str(i) for i in range(len(VALID))])
def test_network_policy_peers_are_accepted(kubectl: Any, namespace: str, network: dict[str, Any]) -> None:
    kubectl("create", "--dry-run=server", "-n", namespace, "-f", "-", input=model_deployment(network))
