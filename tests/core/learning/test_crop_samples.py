"""WorldCereal samples tables -> Presto's inputs: value decoding, dekads to months, the season, bad tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.learning.crop_samples import (
    SampleError,
    concatenate,
    labels_under,
    read_samples_table,
    to_series,
)
from core.mapping.presto_inputs import CHANNELS, normalise
from models.presto_heads import model_classes, worldcereal_legends

DATA = Path(__file__).resolve().parents[2] / "data" / "worldcereal"
MONTHLY = DATA / "reference_2022_FRA_month.geoparquet"
DEKADS = DATA / "reference_2023_FRA_dekad_part.geoparquet"


@pytest.fixture(scope="module")
def monthly_table() -> pd.DataFrame:
    return read_samples_table(str(MONTHLY))


@pytest.fixture(scope="module")
def dekad_table() -> pd.DataFrame:
    return read_samples_table(str(DEKADS))


def channel(series, name: str) -> np.ndarray:
    index = CHANNELS.index(name)
    return np.where(series.missing[..., index], np.nan, series.values[..., index])


def test_monthly_samples_decode_to_physical_units_and_a_season_around_the_label_date(monthly_table):
    series = to_series(monthly_table)
    assert len(series) == 500 and series.step == "month"
    assert series.values.shape == (500, 12, 17)
    # valid_time 2022-06 -> 6 months before and 5 after: December 2021 .. November 2022
    assert set(series.start_month.tolist()) == {11}
    assert (series.months()[0] == [11, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).all()
    vv, vh = channel(series, "VV"), channel(series, "VH")
    assert -20 < np.nanmedian(vv) < -5 and np.nanmedian(vh) < np.nanmedian(vv)  # dB, VH below VV
    assert 260 < np.nanmedian(channel(series, "temperature_2m")) < 300  # K
    assert 0.005 < np.nanmedian(channel(series, "total_precipitation")) < 0.2  # metres per month
    assert 100 < np.nanmedian(channel(series, "B04")) < 3000  # reflectance x 10000
    # the table's B8A is all no data (65535): masked, not read as a value
    assert series.missing[..., CHANNELS.index("B8A")].all()
    # one sample against its own rows, by hand: December 2021's B04 and VV
    sample = series.sample_id[0]
    rows = monthly_table[monthly_table.sample_id == sample].set_index("timestamp")
    december = rows.loc[pd.Timestamp("2021-12-01")]
    assert series.values[0, 0, CHANNELS.index("B04")] == december["S2-L2A-B04"]
    assert series.values[0, 0, CHANNELS.index("VV")] == pytest.approx(
        20 * np.log10(december["S1-SIGMA0-VV"]) - 83, abs=1e-4
    )


def test_dekads_become_months_mean_of_the_valid_ones_and_precipitation_summed(dekad_table):
    series = to_series(dekad_table)
    assert len(series) == 291 and series.step == "dekad"
    index = {sid: i for i, sid in enumerate(series.sample_id)}
    rows = dekad_table.copy()
    rows["month"] = pd.to_datetime(rows.timestamp).dt.to_period("M")
    checked = 0
    for sid, group in list(rows.groupby("sample_id"))[:20]:
        i = index[sid]
        first = pd.Period(
            year=2022 + (series.start_month[i] < 8), month=int(series.start_month[i]) + 1, freq="M"
        )
        for step in range(12):
            month = group[group.month == first + step]
            b08 = month["S2-L2A-B08"][month["S2-L2A-B08"] != 65535]
            if len(b08):
                assert series.values[i, step, CHANNELS.index("B08")] == pytest.approx(b08.mean(), rel=1e-5)
                checked += 1
            else:
                assert series.missing[i, step, CHANNELS.index("B08")]
            rain = month["AGERA5-PRECIP"][month["AGERA5-PRECIP"] != 65535]
            if len(rain):
                expected = rain.mean() * 3 / 100 / 1000
                assert series.values[i, step, CHANNELS.index("total_precipitation")] == pytest.approx(
                    expected, rel=1e-5
                )
    assert checked > 100


def test_normalised_inputs_and_ndvi(monthly_table):
    series = to_series(monthly_table)
    x, missing = normalise(series.values, series.missing)
    assert np.isfinite(x).all() and (x[missing] == 0).all()
    red, nir = series.values[..., CHANNELS.index("B04")], series.values[..., CHANNELS.index("B08")]
    has = ~missing[..., CHANNELS.index("NDVI")]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (nir - red) / (nir + red)
    assert np.allclose(x[..., CHANNELS.index("NDVI")][has], ndvi[has], atol=1e-6)
    assert np.allclose(x[..., 0][~missing[..., 0]], (series.values[..., 0][~missing[..., 0]] + 25) / 25)


def test_a_table_without_the_needed_columns_names_them(monthly_table):
    with pytest.raises(
        SampleError, match="lacks the column.*S1-SIGMA0-VV.*ewoc_code|lacks the column.*ewoc_code"
    ):
        to_series(monthly_table.drop(columns=["S1-SIGMA0-VV", "ewoc_code"]))
    # weather and DEM are optional: masked when absent
    series = to_series(monthly_table.drop(columns=["AGERA5-PRECIP", "AGERA5-TMEAN", "slope", "elevation"]))
    assert series.missing[..., CHANNELS.index("temperature_2m")].all()


def test_bad_tables_get_a_sentence(tmp_path, monthly_table):
    (tmp_path / "not.parquet").write_text("sample_id,timestamp\n")
    with pytest.raises(SampleError, match="Could not read the samples as parquet"):
        read_samples_table(str(tmp_path / "not.parquet"))
    with pytest.raises(SampleError, match="no rows"):
        to_series(monthly_table.iloc[:0])
    odd_days = monthly_table.assign(timestamp=pd.to_datetime(monthly_table.timestamp) + pd.Timedelta(days=4))
    with pytest.raises(SampleError, match="start on days"):
        to_series(odd_days)
    no_code = monthly_table.assign(ewoc_code=monthly_table.ewoc_code.astype(object))
    no_code.loc[3, "ewoc_code"] = "wheat?"
    with pytest.raises(SampleError, match="1 rows have no readable ewoc_code"):
        to_series(no_code)


def test_legends_unknown_codes_and_a_model_legend_that_does_not_match(monthly_table):
    series = to_series(monthly_table)
    legends = worldcereal_legends()
    names = labels_under(series.ewoc_code, "CROPTYPE20_EUROPE", legends)
    assert (names == None).sum() == 287  # noqa: E711  ('ignore' under this legend)
    with pytest.raises(SampleError, match="No legend 'CROPTYPE99'.*CROPTYPE20_EUROPE"):
        labels_under(series.ewoc_code, "CROPTYPE99", legends)
    with pytest.raises(SampleError, match=r"1 ewoc_code value\(s\) are not in the legend LANDCOVER10: 1234"):
        labels_under(np.array([1234, *series.ewoc_code[:3]]), "LANDCOVER10", legends)
    # a model whose classes do not cover the legend's: named, not silently dropped
    with pytest.raises(
        SampleError, match="legend class\\(es\\) .*grass_fodder_crops.* that the model does not know"
    ):
        model_classes(names, {}, ("no_crop", "wheat", "maize"))
    values = model_classes(names, {"*": "other_crop"}, ("no_crop", "other_crop"))
    assert set(values[names == None].tolist()) == {-1}  # noqa: E711
    assert (values[names == "no_crop"] == 0).all() and (values[names == "maize"] == 1).all()


def test_two_tables_concatenate(monthly_table, dekad_table):
    both = concatenate([to_series(monthly_table), to_series(dekad_table)])
    assert len(both) == 791 and both.step == "dekad+month"
    assert both.take(both.tile == "30UYU").values.shape == (288, 12, 17)
