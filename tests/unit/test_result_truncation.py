"""A result larger than the 4 KiB termination message: what is kept, what is said, where the rest is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeloop.controllers.jobs import truncation_note
from kubeloop.runtime import ingest
from kubeloop.runtime.jobio import fit_result


def test_a_wide_table_keeps_the_statistics_that_fit_and_says_how_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """digits has 65 columns: their summary is about 8 KiB, twice what a termination message holds."""
    config = {
        "namespace": "ml",
        "name": "digits",
        "storeURI": f"file://{tmp_path}/store",
        "source": {"builtin": "digits"},
    }
    monkeypatch.setenv("KUBELOOP_CONFIG", json.dumps(config))
    monkeypatch.setenv("KUBELOOP_TERMINATION_LOG", str(tmp_path / "termination-log"))
    assert ingest.main([]) == 0
    message = (tmp_path / "termination-log").read_text()
    assert len(message.encode()) <= 4096
    result = json.loads(message)
    kept = result["truncated"]["statistics"]
    assert kept["of"] == 65 and 20 <= kept["kept"] < 65 and len(result["statistics"]) == kept["kept"]
    assert result["rows"] == 1797 and result["columns"] == 65  # the facts status needs are all there
    full = json.loads(Path(result["detailsURI"].removeprefix("file://")).read_text())
    assert len(full["features"]) == 64 and full["target"]["kind"] == "categorical"
    note = truncation_note(result)
    assert f"statistics {kept['kept']} of 65 kept" in note and result["detailsURI"] in note


def test_nothing_is_said_of_a_result_that_fits() -> None:
    small = {"ok": True, "statistics": {"x": {"kind": "numeric"}}}
    assert json.loads(fit_result(small)) == small and truncation_note(small) == ""


def test_a_long_input_signature_is_cut_after_the_statistics_and_the_message_stays_whole() -> None:
    result = {
        "ok": True,
        "statistics": {f"c{i}": {"kind": "numeric", "min": 1.5, "max": 2.5} for i in range(100)},
        "model": {
            "sha256": "a" * 64,
            "inputSignature": [{"name": f"feature_number_{i}", "type": "float"} for i in range(300)],
        },
        "detailsURI": "s3://b/models/a/model-card.json",
    }
    text = fit_result(result)
    fitted = json.loads(text)
    assert len(text.encode()) <= 4096 and fitted["model"]["sha256"] == "a" * 64
    assert fitted["truncated"]["statistics"] == {"kept": 0, "of": 100} and "statistics" not in fitted
    signature = fitted["truncated"]["model.inputSignature"]
    assert signature["of"] == 300 and 0 < signature["kept"] == len(fitted["model"]["inputSignature"])
    # One more entry would not have fitted: the cut is the smallest one.
    fitted["model"]["inputSignature"] = result["model"]["inputSignature"][: signature["kept"] + 1]  # type: ignore[index]
    assert len(json.dumps(fitted, sort_keys=True, separators=(",", ":")).encode()) > 4096
