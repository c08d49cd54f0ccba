"""The two pretrained cloud models, checked against real reference data through TerraSeg's own code paths."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from shapely.geometry import box

from core.geometry.grid import Grid
from core.jobs.progress import RunContext
from core.mapping.inference import normalise, predict_grid, tile_layout
from core.mapping.reading import SceneReader
from core.sources import SAMPLE_DIR
from core.sources.geotiff import read_geotiff_scene
from models import registry
from models.catalogue import catalogue
from tests.conftest import TEST_DATA, load_model

# Real jobs and model runs: left out of `make check`'s quick loop (see the Makefile).
pytestmark = pytest.mark.slow

SLOVENIA = TEST_DATA / "s2_slovenia_eolearn"
S2C_SHA256 = catalogue().get("cloud-s2cloudless").weights_sha256["pixel_s2_cloud_detector_lightGBM_v0.1.txt"]
# REFERENCE_SCENES frames 0..4 are these indices of the 68-date CLP_S2C stack (data README).
FRAME_TO_CLP_INDEX = {"2015-08-20": 2, "2015-07-31": 1, "2015-09-09": 4, "2015-08-30": 3, "2015-07-11": 0}


def cohen_kappa(reference: np.ndarray, predicted: np.ndarray) -> float:
    """Cohen's kappa of two label arrays."""
    labels = np.union1d(reference, predicted)
    confusion = np.array(
        [[np.sum((reference == a) & (predicted == b)) for b in labels] for a in labels], float
    )
    total = confusion.sum()
    observed = np.trace(confusion) / total
    expected = (confusion.sum(0) * confusion.sum(1)).sum() / total**2
    return float((observed - expected) / (1 - expected))


@pytest.mark.parametrize("scene_path", sorted(SAMPLE_DIR.glob("S2_L1C_*.tif")), ids=lambda p: p.name[7:15])
def test_s2cloudless_on_the_embedded_sample_reproduces_the_reference_probabilities(scene_path: Path):
    scene = read_geotiff_scene(scene_path)
    with rasterio.open(scene_path) as dataset:  # the scene's own grid: the read path without resampling
        grid = Grid(dataset.crs.to_string(), dataset.transform, dataset.width, dataset.height)
    model = load_model("cloud-s2cloudless", processing_level="L1C", available_bands=set(scene.bands))
    from models.s2cloudless_model import S2CloudlessPredictor

    with SceneReader([scene], model.card.bands, grid) as reader:
        reflectance, valid = reader.read(Window(0, 0, grid.width, grid.height))
    cloud = S2CloudlessPredictor(S2C_SHA256).predict(normalise(reflectance, model.card.normalisation)[None])[
        0, 1
    ]
    reference = np.load(SLOVENIA / "CLP_S2C.npy")[FRAME_TO_CLP_INDEX[scene.date_iso], ..., 0]
    assert valid.all()
    assert np.corrcoef(cloud.ravel(), reference.ravel())[0, 1] >= 0.999
    np.testing.assert_allclose(cloud, reference, atol=1e-4)


def test_s2cloudless_class_decision_follows_the_package_threshold():
    model = load_model(
        "cloud-s2cloudless",
        processing_level="L1C",
        available_bands=set(catalogue().get("cloud-s2cloudless").bands),
    )
    from models.s2cloudless_model import S2CloudlessPredictor

    scenes = np.load(SLOVENIA / "REFERENCE_SCENES.npy")[:, :, :, [0, 1, 3, 4, 7, 8, 9, 10, 11, 12]]
    batch = scenes.transpose(0, 3, 1, 2).astype(np.float32)
    raw = S2CloudlessPredictor(S2C_SHA256).predict(batch)[:, 1]
    probs = model.predict(batch)
    np.testing.assert_array_equal(probs.argmax(axis=1) == 1, raw > registry.S2CLOUDLESS_THRESHOLD)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_csmask_through_the_tiling_pipeline_agrees_with_the_reference_mask(tmp_path: Path):
    reference = np.load(TEST_DATA / "cloud_reference_ukis_csmask" / "sentinel2.npz")
    image = reference["img"].transpose(2, 0, 1)  # (6, 512, 512): blue green red nir swir16 swir22
    # The reference labels: 4 cloud, 0 cloud shadow, 1-3 clear types (the confusion matrix against the
    # package's own output shows 4 = cloud, 0 = shadow, whatever the data README says).
    labels = reference["msk"][..., 0]
    expected = np.select([labels == 4, labels == 0], [1, 2], 0)
    model = load_model(
        "cloud-csmask", processing_level="L1C", available_bands={"B02", "B03", "B04", "B08", "B11", "B12"}
    )
    assert model.weights_file == "model_6b_l1c.onnx"
    # The image is at the model's resolution already: a 30 m grid, so no averaging.
    grid = Grid("EPSG:32632", Affine(30.0, 0, 500_000.0, 0, -30.0, 5_000_000.0), 512, 512)

    layout = tile_layout(model.card, grid, overlap_px=32)
    # The image inside the context grid; beyond it there is no data (filled per the card).
    row0 = round((layout.context.transform.f - grid.transform.f) / 30)
    col0 = round((grid.transform.c - layout.context.transform.c) / 30)
    context = np.zeros((6, layout.context.height, layout.context.width), np.float32)
    context[:, row0 : row0 + 512, col0 : col0 + 512] = image
    has_data = np.zeros(context.shape[1:], bool)
    has_data[row0 : row0 + 512, col0 : col0 + 512] = True

    def read(window: Window) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = window.toslices()
        return context[:, rows, cols], has_data[rows, cols]

    result = predict_grid(read, model, layout, box(*grid.bounds), RunContext(tmp_path), batch_size=2)
    with rasterio.open(tmp_path / "classes.tif") as dataset:
        classes = dataset.read(1)
    assert result.tiles == len(layout.tiles) <= 16  # tiles of 256 px, 32 px overlap, on the CRS lattice
    kappa = cohen_kappa(expected.ravel(), classes.ravel())
    assert kappa >= 0.75, kappa


def test_models_refuse_data_they_were_not_made_for():
    from core.errors import ModelError

    with pytest.raises(ModelError, match="L1C"):
        load_model("cloud-s2cloudless", processing_level="L2A", available_bands=set())
    with pytest.raises(ModelError, match="B08"):
        load_model("cloud-csmask", processing_level="L1C", available_bands={"B02", "B03", "B04"})
    with pytest.raises(ModelError, match="Unknown model"):
        catalogue().get("cloud-unet-from-nowhere")


def test_a_changed_weights_file_is_named_in_the_error(tmp_path: Path):
    from core.errors import ModelError
    from models.weights import verify_weights

    weights = tmp_path / "w.onnx"
    weights.write_bytes(b"not the model")
    with pytest.raises(ModelError, match="w.onnx.*sha256"):
        verify_weights(weights, "0" * 64, "cloud-csmask")


def test_a_weights_file_changed_after_it_was_verified_is_caught(tmp_path: Path):
    import os

    from core.errors import ModelError
    from models.weights import sha256_of, verify_weights

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"the model")
    good = sha256_of(weights)
    assert verify_weights(weights, good, "m") == good  # remembered from now on
    weights.write_bytes(b"the modem")  # same size; a new mtime
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ModelError, match="w.bin"):
        verify_weights(weights, good, "m")


def test_the_optimised_csmask_graph_is_cached_and_gives_identical_probabilities(tmp_path: Path):
    from models.csmask_model import cpu_optimised_session, variant_file
    from models.weights import sha256_of

    onnx_file = variant_file(6, "L1C")
    sha256 = sha256_of(onnx_file)
    batch = np.random.default_rng(0).random((1, 6, 256, 256), dtype=np.float32)
    first = cpu_optimised_session(onnx_file, sha256, ["CPUExecutionProvider"], 1, tmp_path)
    [cached] = (tmp_path / "models" / "onnx-optimised").glob("*.onnx")
    second = cpu_optimised_session(onnx_file, sha256, ["CPUExecutionProvider"], 1, tmp_path)
    name = first.get_inputs()[0].name
    np.testing.assert_array_equal(first.run(None, {name: batch})[0], second.run(None, {name: batch})[0])
    cached.write_bytes(b"damaged")  # a broken cache file is rebuilt, not fatal
    third = cpu_optimised_session(onnx_file, sha256, ["CPUExecutionProvider"], 1, tmp_path)
    np.testing.assert_array_equal(first.run(None, {name: batch})[0], third.run(None, {name: batch})[0])
    assert cached.stat().st_size > 1000
    assert not list(cached.parent.glob("*.part"))  # no partial graph is left behind


def test_a_session_that_cannot_be_built_leaves_no_partial_graph(tmp_path: Path):
    from models.csmask_model import cpu_optimised_session

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    with pytest.raises(Exception):  # noqa: B017, PT011 - onnxruntime's own error type
        cpu_optimised_session(broken, "0" * 64, ["CPUExecutionProvider"], 1, tmp_path)
    assert not list((tmp_path / "models" / "onnx-optimised").glob("*"))
