"""The runtime entry point and the server's flags, which are derived from ServeConfig's fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kubeloop.runtime.__main__ import main
from kubeloop.runtime.serve.cli import build_parser, parse_args
from kubeloop.runtime.serve.config import ServeConfig

SHA = "ab" * 32


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "usage: python -m kubeloop.runtime" in capsys.readouterr().err


def test_flags_default_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_MODEL_DIR", "/models/m")
    monkeypatch.setenv("KUBELOOP_BATCHING", "off")
    monkeypatch.setenv("KUBELOOP_PORT", "9000")
    monkeypatch.setenv("KUBELOOP_DRAIN_DELAY", "")  # empty counts as unset
    config = parse_args(["--expected-sha256", SHA, "--auth-token-file", "/var/run/tokens"])
    assert config.model_dir == Path("/models/m") and config.port == 9000 and config.batching is False
    assert config.expected_sha256 == SHA and config.auth_token_file == Path("/var/run/tokens")
    assert config.ort_threads == 0 and config.max_body_bytes == 1 << 20 and config.drain_delay == 0


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_PORT", "9000")
    assert parse_args(["--model-dir", "/m", "--port", "7000"]).port == 7000


def test_model_dir_is_required(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KUBELOOP_MODEL_DIR", raising=False)
    with pytest.raises(SystemExit):
        parse_args([])
    assert "--model-dir (or KUBELOOP_MODEL_DIR) is required" in capsys.readouterr().err


def test_every_field_has_one_flag_and_one_variable() -> None:
    """Each setting: --name-with-dashes and KUBELOOP_NAME, help that names the variable."""
    actions = {a.dest: a for a in build_parser()._actions if a.dest != "help"}
    assert set(actions) == {f.name for f in dataclasses.fields(ServeConfig)}
    for name, action in actions.items():
        assert action.option_strings[0] == "--" + name.replace("_", "-")
        assert f"[KUBELOOP_{name.upper()}]" in (action.help or "")


def test_every_value_is_read_with_its_fields_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBELOOP_DRAIN_QUIET", "1.5")
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", "/tmp/log")
    config = parse_args(
        ["--model-dir", "/m", "--max-batch-rows", "8", "--batching", "on", "--drain-timeout", "4"]
    )
    assert config == ServeConfig(
        model_dir=Path("/m"),
        max_batch_rows=8,
        batching=True,
        drain_timeout=4.0,
        drain_quiet=1.5,
        termination_log=Path("/tmp/log"),
    )


def test_the_limits_have_defaults_and_flags() -> None:
    assert parse_args(["--model-dir", "/m"]) == ServeConfig(
        model_dir=Path("/m"),
        max_url_bytes=8192,
        max_header_bytes=32768,
        max_header_fields=100,
        header_timeout=10.0,
        request_timeout=60.0,
        idle_timeout=75.0,
        max_connections=1000,
        metrics_auth=False,
    )
    flags = "--model-dir /m --max-connections 5 --idle-timeout 1.5 --metrics-auth on --auth-token-file /t"
    config = parse_args(flags.split())
    assert config.max_connections == 5 and config.idle_timeout == 1.5 and config.metrics_auth is True


def test_older_flag_names_still_work() -> None:
    assert parse_args(["--model-dir", "/m", "--threads", "3"]).ort_threads == 3
    assert parse_args(["--model-dir", "/m", "--ort-threads", "2"]).ort_threads == 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-batch-rows", "0"], {}, "--max-batch-rows must be at least 1, not 0"),
        (["--max-body-bytes", "0"], {}, "--max-body-bytes must be at least 1, not 0"),
        (["--drain-delay", "-1"], {}, "--drain-delay must be at least 0, not -1.0"),
        (["--batching", "maybe"], {}, "expected on or off, not 'maybe'"),
        ([], {"KUBELOOP_PORT": "eighty"}, "KUBELOOP_PORT='eighty' is not valid for --port"),
        ([], {"KUBELOOP_BATCHING": "maybe"}, "KUBELOOP_BATCHING='maybe' is not valid for --batching"),
        (["--header-timeout", "0"], {}, "--header-timeout must be at least 0.1, not 0.0"),
        (["--max-url-bytes", "10"], {}, "--max-url-bytes must be at least 256, not 10"),
        (["--metrics-auth", "on"], {}, "--metrics-auth needs --auth-token-file"),
    ],
)
def test_bad_values_are_usage_errors_that_name_the_setting(
    args: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit:
        parse_args(["--model-dir", "/m", *args])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err
