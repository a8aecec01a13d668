"""The model report as a person sees it: a model trained in-process (ingest, then train, as a pod runs
them), its report.html rendered by a real headless Chromium, the screenshot and the DOM checked.

Needs the Debian package chromium (cluster/install-host-deps.sh installs it); no cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sklearn.datasets import load_iris

from kubeloop.runtime import ingest, train

# A feature whose name is markup: if the page did not escape it, Chromium would run it and the dumped
# DOM would show the attribute it sets.
SCRIPT_FEATURE = "<script>document.body.setAttribute('data-injected','yes')</script>"
WIDTH, HEIGHT = 1100, 2200


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: install the Debian package chromium (make host-deps)"
    return found


def browse(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --no-sandbox: the tests may run as root, where Chromium's sandbox refuses to start. No network is
    # needed: the page is self-contained.
    return subprocess.run(
        [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    frame = load_iris(as_frame=True).frame.rename(columns={"petal width (cm)": SCRIPT_FEATURE})
    frame["colour & shade"] = ["<b>blue</b>" if i % 3 == 0 else "red" for i in range(len(frame))]
    frame["species"] = frame.pop("target").map({0: "setosa", 1: "versicolor", 2: "virginica"})
    (tmp / "cm").mkdir()
    frame.to_csv(tmp / "cm" / "flowers.csv", index=False)
    store = f"file://{tmp / 'store'}"
    dataset = ingest.ingest(
        {
            "namespace": "ml",
            "name": "flowers",
            "storeURI": store,
            "source": {"configMapRef": {"name": "flowers", "key": "flowers.csv"}},
            "configMapPath": str(tmp / "cm"),
            "schema": {"target": "species"},
            "validation": {"duplicates": "keep"},
        }
    )
    features = [c for c in frame.columns if c not in ("species", "colour & shade")]
    result = train.train(
        {
            "namespace": "ml",
            "name": "flowers-rf",
            "storeURI": store,
            "dataset": {"name": "flowers", "version": dataset["version"]},
            "model": {"estimator": "RandomForestClassifier", "params": {"n_estimators": 30}},
            "features": features,
            "split": {"testFraction": 0.3, "seed": 3},
            "gate": {"minimums": {"accuracy": 0.8}},
        }
    )
    page = Path(result["model"]["reportURI"].removeprefix("file://"))
    return {"result": result, "page": page, "features": features, "dir": tmp}


def test_the_report_renders_as_a_full_page_with_charts(trained: dict[str, Any]) -> None:
    shot = trained["dir"] / "report.png"
    browse(trained["page"], f"--screenshot={shot}")
    size = shot.stat().st_size
    assert size > 20_000, f"a {size}-byte screenshot is too small to hold the report"
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
        pixels = image.convert("RGB")
    grey = pixels.convert("L")
    # Not blank: text and charts put dark pixels on a good share of the rows.
    painted = [y for y in range(HEIGHT) if grey.crop((0, y, WIDTH, y + 1)).getextrema()[0] < 128]
    assert len(painted) > HEIGHT // 5, f"only {len(painted)} of {HEIGHT} rows have anything dark on them"
    colours = pixels.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, f"{len(colours)} colours: the page is (nearly) blank"
    # The charts' blue (importance bars, shaded matrix cells) is on screen, on a sizeable area.
    blue = sum(n for n, (r, g, b) in colours if r < 80 and 70 < g < 130 and b > 140)
    assert blue > 2_000, f"{blue} pixels of the charts' blue: the SVG charts did not render"


def test_the_dom_has_the_metrics_matrix_and_feature_names_as_text(trained: dict[str, Any]) -> None:
    dom = browse(trained["page"], "--dump-dom").stdout
    assert 'id="metrics"' in dom and 'id="confusion-matrix"' in dom and 'id="feature-importance"' in dom
    accuracy = trained["result"]["metrics"]["accuracy"]
    assert f"{accuracy:.4g}" in dom and "minimum 0.8" in dom
    for name in ("setosa", "versicolor", "virginica"):
        assert name in dom
    for feature in trained["features"]:
        if feature != SCRIPT_FEATURE:
            assert feature in dom
    # The markup in the data stayed text: escaped in the DOM, never run, never a tag.
    assert "&lt;script&gt;document.body.setAttribute" in dom and 'data-injected="yes"' not in dom
    assert "&lt;b&gt;blue&lt;/b&gt;" in dom and "colour &amp; shade" in dom
    assert trained["result"]["model"]["sha256"] in dom and "n_estimators=30" in dom
    assert "<script" not in dom.lower().replace("&lt;script", "")


def test_the_report_sits_beside_the_model_and_status_can_point_at_it(trained: dict[str, Any]) -> None:
    model = trained["result"]["model"]
    assert trained["page"].parent.name == model["sha256"] and trained["page"].name == "report.html"
    card = json.loads((trained["page"].parent / "model-card.json").read_text())
    assert card["reportURI"] == model["reportURI"]
    assert card["features"] == trained["features"]
