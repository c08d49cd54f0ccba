"""A crop job through the web app (AppTest, real redis-server and worker): the Presto model offered with its
held-out scores, the estimate from its monthly cube, cubes outside the operator's folders refused, and the
results page with the cropland layer."""

import json
from collections.abc import Callable
from pathlib import Path

from core.config import get_settings
from tests.pages.test_pages import (  # noqa: F401  (app_env is a fixture)
    app_env,
    assert_no_crash,
    downloads,
    open_page,
    sources_box,
    submit_button,
    texts,
)
from tests.services import WorkerProcess, wait_for
from worker.queue.client import JobClient

DATA = Path(__file__).resolve().parents[1] / "data" / "worldcereal"
CUBE = DATA / "monthly_cube_inputs.nc"
CUBE_BBOX = "5.3248,50.6342,5.3276,50.6358"  # 200 m x 180 m inside the cube (EPSG:32631, 1 km2)


def test_a_crop_job_from_a_monthly_cube_runs_from_the_app_and_shows_its_cropland(
    app_env,  # noqa: F811
    client: JobClient,
    start_worker: Callable[..., WorkerProcess],
    downloads,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setenv("TERRASEG_APP_LOCAL_ROOTS", json.dumps([str(DATA)]))
    get_settings.cache_clear()
    at = open_page("pages/new_job.py", None, monkeypatch)
    # As it ships, choosing the crop task on the sample switches to the embedded crop sample and its season, and
    # the map outlines the cube.
    next(s for s in at.selectbox if s.label == "Task").set_value("crop").run()
    assert sources_box(at).value == "sample-crop"
    assert [str(d.value) for d in at.date_input] == ["2020-11-01", "2021-10-31"]
    assert any(t.startswith("Dashed blue: 1 scene(s) of the chosen sources") for t in texts(at.caption))
    at.radio[0].set_value("Type a bbox").run()
    at.text_input[0].set_value(CUBE_BBOX).run()
    assert next(s for s in at.selectbox if s.label == "Model").value == "crop-presto-croptype"
    assert any("Held-out scores: OA 0.77, macro F1 0.74" in t for t in texts(at.caption)), texts(at.caption)
    assert any("given as the source cube:FILE.nc" in t for t in texts(at.caption))
    sources_box(at).set_value("cube:/etc/cube.nc").run()  # outside the operator's folders: refused, nothing read
    assert any("must be inside" in t and "/etc/cube.nc is not" in t for t in texts(at.error)), texts(at.error)
    assert submit_button(at).disabled
    sources_box(at).set_value("sample").run()  # scenes: the search runs (composites of them), finds none here
    assert [str(d.value) for d in at.date_input] == ["2015-07-01", "2015-09-30"]  # defaults follow the source
    assert any("scenes in sample overlaps the area" in t for t in texts(at.error)), texts(at.error)
    sources_box(at).set_value(f"cube:{CUBE}").run()  # an operator's cube: the dates become its season
    assert [str(d.value) for d in at.date_input] == ["2020-11-01", "2021-10-31"]
    assert not at.error, texts(at.error)
    sources_box(at).set_value("sample-crop").run()  # the same cube, shipped: no operator setting needed
    monkeypatch.delenv("TERRASEG_APP_LOCAL_ROOTS")
    get_settings.cache_clear()
    at.run()
    assert_no_crash(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Monthly composites"] == "12" and metrics["Download"] == "0 MB", metrics
    assert metrics["Expected run time"].endswith("s")
    assert any("A monthly cube of 12 months (2020-11..2021-10, S1 + S2)" in t for t in texts(at.caption))
    start_worker()
    submit_button(at).click()
    at.run()
    assert_no_crash(at)
    [job] = client.list_jobs()
    wait_for(client, job.job_id, ("finished",), timeout_s=180)

    at = open_page("pages/results.py", None, monkeypatch)
    assert_no_crash(at)
    assert any("2020-11..2021-10 (12 monthly composites)" in t for t in texts(at.caption))
    assert [h.value for h in at.subheader][:2] == ["Cropland and crop types side by side", "Area per class"]
    assert len(at.get("image")) == 2  # cropland and crop types
    cropland = at.dataframe[1].value
    assert list(cropland["class"]) == ["other", "cropland"]
    outputs = {Path(p).name: Path(p) for p in client.status(job.job_id).outputs}
    assert downloads[f"{job.job_id}_cropland.tif"] == outputs["cropland.tif"].read_bytes()
    assert "Cropland (COG)" in {b.proto.label for b in at.get("download_button")}
