"""End to end in a real browser: Debian's Chromium driven by Playwright against `streamlit run app.py`, a real
worker and a real redis-server. Upload the embedded sample's AOI, submit, follow the job to done, open the
results, check overlay and legend, download the class COG. The results page's screenshot is saved to
tests/artifacts/ (git-ignored)."""

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rasterio

from core.config import Settings
from core.sources import SAMPLE_DIR
from tests.pages.browser import (
    BLOCKED,
    CHROMIUM,
    CHROMIUM_ARGS,
    StreamlitServer,
    block,
    choose_option,
    is_remote,
)
from tests.services import WorkerProcess, free_port, job_env
from worker.queue.client import JobClient

playwright_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# The basemaps' tile servers: the only outside requests a page makes (OpenStreetMap, Esri's satellite imagery).
TILE_HOSTS = ("tile.openstreetmap.org", "server.arcgisonline.com")
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def app_env_with_accounts(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The app's environment: the test's Redis and cache, and the accounts of the AppTests (PASSWORDS)."""
    from tests.pages.test_pages import accounts_toml

    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml())
    return job_env(settings) | {"TERRASEG_ACCOUNTS_FILE": str(accounts)}


def sign_in(page, name: str) -> None:  # noqa: ANN001 - playwright Page
    """Sign in through the app's form, as a user types it."""
    from tests.pages.test_pages import PASSWORDS

    page.get_by_label("Account name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORDS[name])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sign_in.png"))
    page.get_by_role("button", name="Sign in").click()
    wait_for_session_cookie(page)  # the page goes for the session cookie, and comes back signed in
    page.wait_for_load_state()
    playwright_api.expect(page.get_by_text(f"Signed in as {name}")).to_be_visible()


@pytest.fixture
def app_server(settings: Settings, tmp_path: Path) -> Iterator[StreamlitServer]:
    server = StreamlitServer(
        free_port(), app_env_with_accounts(settings, tmp_path), tmp_path / "streamlit.log"
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed; `make test` installs it (apt package chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1400}, accept_downloads=True)
        context.route(is_remote, block)  # offline: nothing leaves the machine
        page = context.new_page()
        page.set_default_timeout(60_000)
        # The browser's own account of a failure (a map script's error, a failed request), printed at the end:
        # pytest shows it with a failed test's output.
        messages: list[str] = []
        page.on("console", lambda message: messages.append(f"console {message.type}: {message.text}"))
        page.on("pageerror", lambda error: messages.append(f"page error: {error}"))

        def request_failed(request) -> None:  # noqa: ANN001 - playwright Request
            if not is_remote(request.url):  # outside requests fail on purpose (offline)
                messages.append(f"request failed: {request.url[:120]} ({request.failure})")

        page.on("requestfailed", request_failed)
        started = time.monotonic()
        for event in ("frameattached", "framedetached", "framenavigated"):
            page.on(
                event,
                lambda frame, event=event: messages.append(
                    f"{time.monotonic() - started:6.1f} s {event} {frame.url[:100]}"
                ),
            )
        yield page
        print("\n".join(["browser messages (last 60):", *messages[-60:]]))
        context.close()
        browser.close()


def test_upload_submit_follow_and_open_the_results_in_a_real_browser(
    app_server: StreamlitServer,
    start_worker: Callable[..., WorkerProcess],
    browser_page,  # noqa: ANN001 - playwright Page
    settings: Settings,
    tmp_path: Path,
):
    page = browser_page
    start_worker()
    expect = playwright_api.expect
    page.goto(app_server.url + "/jobs")  # a visitor's link to a page gets the sign-in form, and no page list
    expect(page.get_by_role("heading", name="Sign in to TerraSeg")).to_be_visible()
    expect(page.get_by_text("Workers and queues")).to_have_count(0)
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
    sign_in(page, "analyst")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()  # the page asked for, after the sign-in
    page.get_by_role("link", name="New job").click()

    # New job: a rectangle drawn with Leaflet.draw becomes the AOI...
    map_iframe = page.locator('iframe[title="streamlit_folium.st_folium"]').first
    map_frame = page.frame_locator('iframe[title="streamlit_folium.st_folium"]').first
    zoom_js = "el => Object.keys(window).filter(k => k.startsWith('map_')).map(k => window[k].getZoom())[0]"
    map_frame.locator(".leaflet-control-zoom-out").click()  # the user's own view, which a drawing must keep
    page.wait_for_timeout(800)
    zoom_chosen = map_frame.locator(".leaflet-container").evaluate(zoom_js)
    map_frame.locator(".leaflet-draw-draw-rectangle").click()
    box = map_iframe.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 60, y - 40)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=10)
    page.mouse.up()
    expect(
        page.get_by_text(re.compile(r"Area of interest: [0-9.]+ km² \(drawn on the map\)"))
    ).to_be_visible()
    page.wait_for_timeout(1000)
    assert map_frame.locator(".leaflet-container").evaluate(zoom_js) == zoom_chosen  # no jump to the drawing
    # The trash tool's "Clear all" removes the area.
    map_frame.locator(".leaflet-draw-edit-remove").click()
    map_frame.get_by_text("Clear All").click()
    expect(page.get_by_text("Draw a rectangle or a polygon with the tools")).to_be_visible()
    expect(page.get_by_text("(drawn on the map)")).to_have_count(0)
    # Offline, the basemap's tiles fail and the map shows country outlines instead, saying so; the sample's 5
    # scenes are outlined, and one click makes the area they all cover the area of interest.
    expect(map_frame.get_by_text("Basemap tiles unreachable")).to_be_visible(timeout=15_000)
    expect(page.get_by_text("Dashed blue: 5 scene(s) of the chosen sources, 2015-07-11 to 2015-09-09.")).to_be_visible()
    page.get_by_role("button", name="Use the imagery's extent").click()
    expect(page.get_by_text(re.compile(r"Area of interest: 1\.02\d km² \(the imagery's extent\)"))).to_be_visible()

    # ... and so does an upload of the sample's AOI; the pre-flight search finds the 5 sample dates.
    page.get_by_text("Upload a file").click()
    page.locator('input[type="file"]').set_input_files(str(SAMPLE_DIR / "aoi.geojson"))
    expect(page.get_by_text("Area of interest: 0.931 km² (aoi.geojson)")).to_be_visible()
    expect(map_frame.locator(".leaflet-container")).to_be_visible()
    expect(map_frame.locator("path.leaflet-interactive").first).to_be_visible()  # the AOI outline
    expect(map_frame.locator(".leaflet-draw-draw-rectangle")).to_have_count(0)  # no drawing while uploading
    expect(page.get_by_text("Scenes found")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "new_job.png"), full_page=True)
    submit = page.get_by_role("button", name="Submit")
    expect(submit).to_be_enabled()
    # An end date typed into the field's segments and not confirmed (no Tab, no Enter) is the one submitted:
    # the click on Submit hands it to the app first. The sample has 4 dates up to 2015-08-31.
    end_date = page.get_by_test_id("stDateInput").filter(has_text="End date")
    end_date.get_by_role("spinbutton", name="month, End date").click()
    page.keyboard.type("0831")  # month 08, then the field moves on to the day: 31
    expect(end_date.get_by_role("spinbutton", name="day, End date")).to_have_attribute("aria-valuenow", "31")
    submit.click()
    submitted = page.get_by_text(re.compile(r"Job \d{8}-\d{6}-[0-9a-f]{6} submitted"))
    expect(submitted).to_be_visible()
    job_id = re.search(r"\d{8}-\d{6}-[0-9a-f]{6}", submitted.inner_text()).group()  # type: ignore[union-attr]
    assert str(JobClient(settings).spec(job_id).end) == "2015-08-31"
    expect(page.get_by_test_id("stMetric").filter(has_text="Dates")).to_contain_text("4")

    # Jobs: the fragment refreshes on its own until the job is finished.
    page.get_by_role("link", name="Follow it on the Jobs page").click()
    expect(page.get_by_text(re.compile(r"· finished ·"))).to_be_visible(timeout=120_000)
    page.wait_for_timeout(1000)  # the finished job's thumbnail
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jobs_page.png"))
    page.get_by_role("link", name="Open results").click()

    # Results: the map with both local overlays, the legend, the areas, and a real COG to download.
    expect(page.get_by_text("Area per class")).to_be_visible()
    result_frame = page.frame_locator('iframe[title="streamlit_folium.st_folium"]').first
    # The map's iframe draws after the page's text; on a loaded machine (CI: two test processes and their workers on
    # 2 cores) that once took more than Playwright's default 5 s.
    expect(result_frame.locator("img.leaflet-image-layer")).to_have_count(2, timeout=30_000)
    expect(result_frame.locator("path.leaflet-interactive")).to_have_count(1)  # the AOI's outline
    # Zoomed in, the map keeps its zoom while the opacity slider changes the class layer alone.
    container = result_frame.locator(".leaflet-container")
    zoom_js = "el => Object.keys(window).filter(k => k.startsWith('map_')).map(k => window[k].getZoom())[0]"
    zoomed = zoom_before = None
    # A click can be lost on a loaded machine (the page is still redrawing): click again, as a user would.
    for attempt in range(3):
        zoom_before = container.evaluate(zoom_js)
        try:
            result_frame.locator(".leaflet-control-zoom-in").click(timeout=10_000)
        except playwright_api.TimeoutError:
            print(f"zoom-in click {attempt + 1} timed out")
            continue
        page.wait_for_timeout(800)  # the zoom animation
        zoomed = container.evaluate(zoom_js)
        if zoomed == zoom_before + 1:
            break
    assert zoom_before is not None and zoomed == zoom_before + 1, "the map did not zoom in"
    page.get_by_role("slider").first.focus()
    page.keyboard.press("ArrowLeft")  # 0.60 -> 0.55
    expect(page.get_by_text("0.55")).to_be_visible()
    expect(result_frame.locator("img.leaflet-image-layer[style*='opacity: 0.55']")).to_have_count(1)
    assert container.evaluate(zoom_js) == zoomed
    expect(result_frame.get_by_text("Satellite")).to_be_visible()  # the basemap choice, next to OpenStreetMap
    legend = page.locator(".terraseg-legend")
    for name in ("clear", "cloud", "cloud shadow"):
        expect(legend.get_by_text(name, exact=False).first).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Classes (COG)").click()
    downloaded = tmp_path / "classes.tif"
    download_info.value.save_as(downloaded)
    with rasterio.open(downloaded) as cog:
        assert cog.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert (
            cog.count == 1 and cog.dtypes[0] == "uint8" and cog.colormap(1)[1][:3] == (0, 200, 255)
        )  # cloud: cyan
    ARTIFACTS.mkdir(exist_ok=True)
    page.get_by_role("heading", name="Results").scroll_into_view_if_needed()
    page.wait_for_timeout(500)  # let Leaflet finish drawing after the scroll
    page.screenshot(path=str(ARTIFACTS / "results_page.png"))

    # The class map as polygons: a GeoPackage that geopandas opens, in the job's UTM grid.
    import geopandas

    page.get_by_text("Make the vector files").click()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Classes (GeoPackage)").click()
    gpkg = tmp_path / "classes.gpkg"
    download_info.value.save_as(gpkg)
    frame = geopandas.read_file(gpkg)
    assert len(frame) > 0 and frame.crs.to_epsg() == 32633
    assert set(frame["class"]) <= {"clear", "cloud", "cloud shadow"}
    page.get_by_role("heading", name="Vector files").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "results_vectors.png"))

    # Accuracy and area: download the sample, label it (the map is right but for 5 clear points that are
    # cloud shadow), upload it, and read the estimates, which the job keeps and offers among its downloads.
    page.get_by_role("heading", name="Accuracy and area").scroll_into_view_if_needed()
    with page.expect_download() as sample_info:
        page.get_by_role("button", name="Sample to label (CSV)").click()
    sample_csv = tmp_path / "sample.csv"
    sample_info.value.save_as(sample_csv)
    rows = sample_csv.read_text().splitlines()
    assert rows[0] == "sample_id,map_class,map_value,lon,lat,reference"
    labelled_rows = [rows[0]]
    flipped = 0
    for row in rows[1:]:
        mapped = row.split(",")[1]
        truth = "cloud shadow" if mapped == "clear" and flipped < 5 else mapped
        flipped += truth != mapped
        labelled_rows.append(row + truth)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("\n".join(labelled_rows) + "\n")
    page.locator('input[type="file"]').last.set_input_files(str(labelled))
    expect(page.get_by_text("Label field")).to_be_visible()
    page.get_by_role("button", name="Estimate accuracy and areas").click()
    expect(page.get_by_text(re.compile(r"Estimated from \d+ labelled points; saved with the job"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"Overall accuracy 0\.99\d ± 0\.00\d"))).to_be_visible()
    expect(page.get_by_role("button", name="Accuracy and areas (CSV)")).to_be_visible()
    page.get_by_text(re.compile(r"Overall accuracy 0\.")).scroll_into_view_if_needed()
    page.wait_for_timeout(1000)  # the chart draws
    page.screenshot(path=str(ARTIFACTS / "results_accuracy.png"))

    # Signing out deletes the files the download buttons served: a link copied before stops working at once.
    links = [download_info.value.url]
    assert [urllib.request.urlopen(url).status for url in links] == [200]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    for url in links:
        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(url)
        assert gone.value.code == 404

    # A shared link to this job's results, opened signed out: after the sign-in, that job's results.
    page.goto(f"{app_server.url}/results?job={job_id}")
    expect(page.get_by_role("heading", name="Sign in to TerraSeg")).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    sign_in(page, "analyst")
    expect(page.get_by_role("heading", name="Results")).to_be_visible()
    expect(page.get_by_text("Area per class")).to_be_visible()
    assert f"job={job_id}" in page.url

    # The sign-in lasts: a reload, and the link pasted into a new tab, find the user signed in. The session is in
    # a cookie the page's scripts cannot read, sent to this site only, for 8 hours after the last page load.
    cookie = wait_for_session_cookie(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain HTTP here
    assert 8 * 3600 - 120 < cookie["expires"] - time.time() <= 8 * 3600, cookie
    assert "terraseg_session" not in page.evaluate("document.cookie")
    page.reload()
    expect(page.get_by_text("Area per class")).to_be_visible()
    expect(page.get_by_text("Signed in as analyst")).to_be_visible()
    tab = page.context.new_page()
    tab.goto(page.url)
    expect(tab.get_by_text("Area per class")).to_be_visible()
    # Signing out in one tab ends the session in every tab: the other is at the sign-in form at its next click.
    tab.get_by_role("button", name="Sign out").click()
    expect(tab.get_by_role("button", name="Sign in")).to_be_visible()
    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Sign in to TerraSeg")).to_be_visible()
    page.reload()  # and a reload does not bring it back
    expect(page.get_by_role("heading", name="Sign in to TerraSeg")).to_be_visible()
    tab.close()

    # Nothing the pages asked for left the machine but the basemaps' tiles (which failed: offline).
    assert BLOCKED and all(any(host in url for host in TILE_HOSTS) for url in BLOCKED), sorted(set(BLOCKED))


def wait_for_session_cookie(page, timeout_s: float = 30) -> dict[str, object]:  # noqa: ANN001 - playwright Page
    """The session cookie once the browser has it (the sign-in sends the browser for it right away)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c for c in page.context.cookies() if c["name"] == "terraseg_session"]
        if found:
            return dict(found[0])
        page.wait_for_timeout(200)
    raise AssertionError("the browser got no session cookie after signing in")


def test_an_admin_signs_in_starts_a_training_run_watches_it_and_promotes_it_in_a_real_browser(
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    browser_page,  # noqa: ANN001 - playwright Page
    tmp_path: Path,
):
    from models import versions
    from tests.pages.test_admin import install_versions
    from tests.worker.pipelines.test_training import CLASSES, label_file

    model_dir = install_versions(settings.cache_dir)  # slovenia: version 1 in production, 2 a candidate
    server = StreamlitServer(
        free_port(), app_env_with_accounts(settings, tmp_path), tmp_path / "streamlit.log"
    )
    try:
        server.wait_ready()
        start_worker("--queues", "training")
        page = browser_page
        expect = playwright_api.expect
        page.goto(server.url)
        sign_in(page, "admin")
        expect(page.get_by_text("Workers and queues")).to_be_visible()  # app.py's navigation is in place
        page.get_by_role("link", name="Admin", exact=True).click()
        expect(page.get_by_text("Train a model")).to_be_visible()
        page.locator('input[type="file"]').first.set_input_files(
            str(label_file(tmp_path, CLASSES, "parcels.gpkg"))
        )
        # The first upload loads the training code (PyTorch) into the app: seconds on a loaded machine.
        expect(page.get_by_text("Class field", exact=True)).to_be_visible(timeout=60_000)
        for label, value in (
            ("Area of the imagery", "14.5525,45.8665,14.5630,45.8745"),
            ("New model id", "slovenia"),
        ):
            field = page.get_by_role("textbox", name=label)
            # While a rerun is drawing, Streamlit may show the form twice (the old one not yet removed).
            expect(field).to_have_count(1, timeout=30_000)
            field.fill(value)
            field.press("Enter")  # Streamlit takes a text input's value on Enter or when it loses focus
        page.get_by_role("button", name="Check").click()
        expect(page.get_by_text(re.compile(r"\d+ date\(s\), [\d,]+ pixels"))).to_be_visible(timeout=60_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin_check.png"))
        page.get_by_role("button", name="Start training").click()
        expect(
            page.get_by_text(re.compile(r"Training run \d{8}-\d{6}-[0-9a-f]{6} is queued"))
        ).to_be_visible()
        # The runs list refreshes on its own: progress, then the epochs' chart and the scores.
        expect(page.get_by_text("Training loss and validation macro F1 per epoch")).to_be_visible(
            timeout=120_000
        )
        expect(page.get_by_text(re.compile(r"installed slovenia version 3 \(candidate\)"))).to_be_visible(
            timeout=120_000
        )
        page.get_by_role("heading", name="Training runs").scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "admin_trained.png"))
        # The page redraws when the run has installed its version: the models' list offers it for promotion.
        choose_option(page, "Version", "3", timeout_s=30)
        page.get_by_role("button", name="Promote to production").click()
        expect(page.get_by_text("Promote slovenia version 3 to production?")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "admin_promote_question.png"))
        page.get_by_role("button", name="Promote", exact=True).click()
        expect(page.get_by_text("slovenia version 3 is in production.")).to_be_visible()
        deadline = time.monotonic() + 30
        while versions.read_versions(model_dir).production != "3":  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the promotion did not reach the model's versions"
            time.sleep(0.2)
        page.wait_for_timeout(2000)  # the rerun after the promotion
        page.get_by_text("Compare a version with its parent").click()
        expect(page.get_by_text(re.compile(r"slovenia@3: [\d,]+ held-out samples"))).to_be_visible()
        page.get_by_role("heading", name="Models trained here").scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "admin_promoted.png"))
        # the version's map of the validation area next to its parent's and the validation labels
        expect(page.get_by_text("The validation area on the training date")).to_be_visible()
        page.locator("[data-testid='stImage']").last.scroll_into_view_if_needed()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "admin_compare.png"))
    finally:
        server.stop()


def test_a_user_watches_a_job_come_back_after_its_worker_dies_and_compares_two_dates_in_a_real_browser(
    app_server: StreamlitServer,
    start_worker: Callable[..., WorkerProcess],
    browser_page,  # noqa: ANN001 - playwright Page
    client,  # noqa: ANN001
    large_source,  # noqa: ANN001
):
    from tests.services import large_spec, sample_spec, wait_for

    page = browser_page
    expect = playwright_api.expect
    worker = start_worker()
    clear = client.submit(sample_spec(selected_date="2015-07-11"), owner="analyst", name="clear day")
    cloudy = client.submit(sample_spec(selected_date="2015-07-31"), owner="analyst", name="cloudy day")
    for job_id in (clear, cloudy):
        wait_for(client, job_id, ("finished",))
    # Two of its four dates: long enough to be caught running and killed, half the time to finish.
    client.submit(large_spec(large_source, end="2015-07-31"), owner="analyst", name="big area")
    page.goto(app_server.url)
    sign_in(page, "analyst")
    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_text(re.compile(r"big area · [0-9a-f-]+ · running ·")).first).to_be_visible(
        timeout=60_000
    )
    worker.kill()
    # The page soon says the job is queued again because its worker stopped (test_job_faults.py holds the
    # client to 10 s; here the page's 2 s refresh and a loaded machine come on top).
    expect(page.get_by_text(re.compile(r"big area · [0-9a-f-]+ · queued ·")).first).to_be_visible(
        timeout=20_000
    )
    expect(page.get_by_text("re-queued: its worker stopped").first).to_be_visible()
    expect(page.get_by_text("Your jobs queued: 1")).to_be_visible()  # the sidebar agrees with the list
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jobs_worker_lost.png"))
    start_worker()
    expect(page.get_by_text(re.compile(r"big area · [0-9a-f-]+ · running ·")).first).to_be_visible(
        timeout=45_000
    )
    expect(page.get_by_text(re.compile(r"big area · [0-9a-f-]+ · finished ·")).first).to_be_visible(
        timeout=180_000
    )
    expect(page.get_by_text(re.compile(r"elapsed .*, attempt 2")).first).to_be_visible()

    # Compare the clear day with the cloudy one: find the cloudy day on the Jobs page and open its results.
    search = page.get_by_role("textbox", name="Name or id contains")
    search.fill("cloudy")
    search.press("Enter")
    expect(page.get_by_role("link", name="Open results")).to_have_count(1)
    page.get_by_role("link", name="Open results").click()
    expect(page.get_by_text(re.compile(r"date 2015-07-31"))).to_be_visible()
    expect(page.get_by_text("Compare with another job over this area")).to_be_visible()
    choose_option(page, "Compare with", re.compile("clear day"))
    expect(page.get_by_text("Transition matrix", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Before: 2015-07-11")).to_be_visible()
    # The swipe: the before map left of the slider, the after map right of it. End shows the before map whole
    # (the after image clipped away), Home the after map whole.
    compare_frame = page.frame_locator('iframe[title="streamlit_folium.st_folium"]').nth(1)
    swipe = compare_frame.get_by_role("slider", name="Swipe between before and after")
    expect(swipe).to_be_visible(timeout=30_000)
    after_image = compare_frame.locator("img.leaflet-image-layer").nth(1)  # before, after (the change is off)
    expect(compare_frame.locator("img.leaflet-image-layer")).to_have_count(2)
    image_width = after_image.evaluate("el => el.offsetWidth")
    # The left inset in px: the last length of "inset(0px 0px 0px 123.4px)" ("inset(0px)" when it is 0).
    clip_js = (
        r"el => { const m = el.style.clipPath.match(/([\d.]+)px\)$/); return m ? parseFloat(m[1]) : null; }"
    )
    half = after_image.evaluate(clip_js)
    assert 0 < half < image_width, (half, image_width)
    swipe.focus()
    page.keyboard.press("Home")
    expect(swipe).to_have_value("0")
    assert after_image.evaluate(clip_js) == 0
    page.keyboard.press("End")
    expect(swipe).to_have_value("100")
    assert after_image.evaluate(clip_js) >= image_width - 1
    for _ in range(45):
        page.keyboard.press("ArrowLeft")  # 55 %, just right of the map's centre: both maps in view
    expect(swipe).to_have_value("55")
    assert half < after_image.evaluate(clip_js) < image_width
    page.get_by_text("Transition matrix", exact=True).scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "results_compare.png"))
    compare_frame.locator(".leaflet-container").screenshot(path=str(ARTIFACTS / "results_swipe.png"))
