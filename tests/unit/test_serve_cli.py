"""The runtime entry point and the server's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeloop.runtime.__main__ import main
from kubeloop.runtime.serve.cli import parse_args


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "usage: python -m kubeloop.runtime" in capsys.readouterr().err


def test_flags_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_MODEL_DIR", "/models/m")
    monkeypatch.setenv("KUBELOOP_BATCHING", "off")
    monkeypatch.setenv("KUBELOOP_PORT", "9000")
    config = parse_args(["--expected-sha256", "ab" * 32, "--auth-token-file", "/var/run/tokens"])
    assert config.model_dir == Path("/models/m") and config.port == 9000 and config.batching is False
    assert config.expected_sha256 == "ab" * 32 and config.auth_token_file == Path("/var/run/tokens")
    assert config.ort_threads is None and config.max_body_bytes == 1 << 20


def test_model_dir_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBELOOP_MODEL_DIR", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
