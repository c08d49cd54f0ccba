"""WorldCereal reference samples: labelled pixel time series from an extraction parquet, as Presto's inputs.

WorldCereal publishes its reference data as (geo)parquet tables with one row per sample and time step: S2 L2A
bands, S1 backscatter, DEM and AgERA5 weather values, the sample's location and its crop label (`ewoc_code`,
WorldCereal's hierarchical land-cover / crop code). Value encodings (WorldCereal's extraction conventions,
checked against the ranges in the shipped samples):

- 65535 means no data in every column;
- S2 `S2-L2A-Bxx`: reflectance x 10000 (kept as is; Presto divides by 10000);
- S1 `S1-SIGMA0-VV/VH`: backscatter compressed to uint16; dB = 20 log10(DN) - 83 (0 is no data too);
- `AGERA5-PRECIP`: precipitation in mm x 100 per step -> metres, as Presto wants;
- `AGERA5-TMEAN`: mean temperature in K x 100 -> K;
- `elevation` (m) and `slope` (degrees) as they are.

Steps are months, or dekads (10-day steps starting on the 1st, 11th and 21st), which are aggregated to months
here: the mean of the valid dekads of the month, and for precipitation their sum (scaled up by 3/n when only
n of the 3 dekads have a value). A sample's season is the 12 months centred on its `valid_time` (the label's
date: 6 months before, 5 after, shifted to stay inside the months the sample has), as WorldCereal places it;
months without data are masked.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import AppError
from core.mapping.presto_inputs import CHANNELS

NO_DATA = 65535
SEASON_MONTHS = 12
S2_COLUMNS = {band: f"S2-L2A-{band}" for band in CHANNELS[2:12]}
S1_COLUMNS = {"VV": "S1-SIGMA0-VV", "VH": "S1-SIGMA0-VH"}
OPTIONAL_COLUMNS = {
    "temperature_2m": "AGERA5-TMEAN",
    "total_precipitation": "AGERA5-PRECIP",
    "elevation": "elevation",
    "slope": "slope",
}
REQUIRED = ("sample_id", "timestamp", "ewoc_code", "lat", "lon", "valid_time", *S1_COLUMNS.values(),
            *(c for b, c in S2_COLUMNS.items() if b != "B8A"))  # fmt: skip


class SampleError(AppError):
    """A samples table that cannot be read as WorldCereal reference samples."""


@dataclass(frozen=True)
class SampleSeries:
    """N samples' 12-month seasons in Presto's channel order, physical units (models.presto.CHANNELS)."""

    sample_id: np.ndarray  # [N] str
    ewoc_code: np.ndarray  # [N] int64
    tile: np.ndarray  # [N] str: the S2 tile, or "" when the table has none
    latlon_deg: np.ndarray  # [N, 2]
    values: np.ndarray  # [N, 12, 17] float32 (NDVI column unused: computed from B04/B08)
    missing: np.ndarray  # [N, 12, 17] bool
    start_month: np.ndarray  # [N] calendar month (0 = January) of the first step
    step: str  # "month" or "dekad": the table's own steps, before aggregation

    def __len__(self) -> int:
        return len(self.sample_id)

    def months(self) -> np.ndarray:
        """[N, 12] calendar month (0..11) of each step."""
        return (self.start_month[:, None] + np.arange(SEASON_MONTHS)[None]) % 12

    def take(self, keep: np.ndarray) -> "SampleSeries":
        """The samples where `keep` (a boolean or index array) says so."""
        return SampleSeries(
            self.sample_id[keep], self.ewoc_code[keep], self.tile[keep], self.latlon_deg[keep],
            self.values[keep], self.missing[keep], self.start_month[keep], self.step,
        )  # fmt: skip


def read_samples_table(path: str) -> pd.DataFrame:
    """The table at `path` (a parquet or geoparquet file), or SampleError with a sentence."""
    import pyarrow  # noqa: F401  (pandas reads parquet through it)

    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise SampleError(f"Could not read the samples as parquet: {err}") from err
    return table


def decode(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The table's values [rows, 17] in physical units (core.mapping.presto_inputs.CHANNELS) and their mask (True =
    none)."""
    columns = {
        column: pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
        for column in (*S1_COLUMNS.values(), *S2_COLUMNS.values(), *OPTIONAL_COLUMNS.values())
        if column in table
    }
    return decode_columns(columns, len(table))


def decode_columns(
    columns: Mapping[str, np.ndarray], size: int, no_data: float = NO_DATA
) -> tuple[np.ndarray, np.ndarray]:
    """Raw WorldCereal-encoded arrays by column name (each of `size` values; absent columns are masked) ->
    values [size, 17] in physical units and their mask. `no_data` is no data too (besides 65535)."""
    values = np.zeros((size, len(CHANNELS)), np.float64)
    missing = np.ones((size, len(CHANNELS)), bool)
    for channel, column in {**S1_COLUMNS, **S2_COLUMNS, **OPTIONAL_COLUMNS}.items():
        if column not in columns:
            continue  # an input the table does not have: masked
        raw = np.asarray(columns[column], np.float64).reshape(size)
        bad = ~np.isfinite(raw) | (raw == NO_DATA) | (raw == no_data)
        if channel in S1_COLUMNS:
            bad |= raw <= 0
            with np.errstate(divide="ignore", invalid="ignore"):
                raw = 20 * np.log10(raw) - 83  # dB
        elif channel == "total_precipitation":
            raw = raw / 100 / 1000  # mm x 100 -> m
        elif channel == "temperature_2m":
            raw = raw / 100  # K x 100 -> K
        index = CHANNELS.index(channel)
        values[:, index] = np.where(bad, 0.0, raw)
        missing[:, index] = bad
    return values, missing


def step_kind(timestamps: pd.Series) -> str:
    """'month' when every step starts on the 1st of a month, 'dekad' when on the 1st, 11th or 21st."""
    days = set(timestamps.dt.day.unique().tolist())
    if days <= {1}:
        return "month"
    if days <= {1, 11, 21}:
        return "dekad"
    raise SampleError(
        f"The samples' time steps start on days {sorted(days)[:6]} of the month; TerraSeg reads monthly steps "
        "(the 1st) or dekads (the 1st, 11th and 21st)."
    )


def to_series(table: pd.DataFrame) -> SampleSeries:
    """Samples' 12-month seasons from a WorldCereal extraction table; SampleError for a table it cannot read."""
    absent = [c for c in REQUIRED if c not in table]
    if absent:
        raise SampleError(
            f"The samples table lacks the column(s) {', '.join(absent)}; it needs WorldCereal's extraction "
            "columns (sample_id, timestamp, ewoc_code, lat, lon, valid_time, S1-SIGMA0-VV/VH, S2-L2A-B02..B12)."
        )
    if table.empty:
        raise SampleError("The samples table has no rows.")
    table = table.reset_index(drop=True)
    timestamps = pd.to_datetime(table["timestamp"], utc=True, errors="coerce")
    valid_time = pd.to_datetime(table["valid_time"], utc=True, errors="coerce")
    codes = pd.to_numeric(table["ewoc_code"], errors="coerce")
    for name, column in (("timestamp", timestamps), ("valid_time", valid_time), ("ewoc_code", codes)):
        if column.isna().any():
            raise SampleError(f"{int(column.isna().sum())} rows have no readable {name}.")
    step = step_kind(timestamps)
    values, missing = decode(table)
    month_index = (timestamps.dt.year * 12 + timestamps.dt.month - 1).to_numpy()
    sample_ids = table["sample_id"].astype(str).to_numpy()
    ids, first_row, sample_of_row = np.unique(sample_ids, return_index=True, return_inverse=True)
    # Months: per (sample, month) the mean of the valid steps; precipitation is a sum (see the module doc).
    keys = pd.MultiIndex.from_arrays([sample_of_row, month_index])
    valid = (~missing).astype(np.float64)
    sums = pd.DataFrame(values * valid).groupby(keys).sum()
    counts = pd.DataFrame(valid).groupby(keys).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        monthly = np.array((sums / counts).to_numpy(), dtype=np.float64)
    if step == "dekad":  # a month's precipitation is the sum of its three dekads: 3 x their mean
        monthly[:, CHANNELS.index("total_precipitation")] *= 3
    month_missing = counts.to_numpy() == 0
    sample_at, month_at = (np.asarray(level) for level in zip(*sums.index.to_list(), strict=True))
    n = len(ids)
    first_month = np.full(n, np.iinfo(np.int64).max)
    last_month = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first_month, sample_at, month_at)
    np.maximum.at(last_month, sample_at, month_at)
    valid_month = (valid_time.dt.year * 12 + valid_time.dt.month - 1).to_numpy()[first_row]
    start = np.clip(valid_month - SEASON_MONTHS // 2, first_month, np.maximum(first_month, last_month - 11))
    out_values = np.zeros((n, SEASON_MONTHS, len(CHANNELS)), np.float32)
    out_missing = np.ones((n, SEASON_MONTHS, len(CHANNELS)), bool)
    offset = month_at - start[sample_at]
    inside = (offset >= 0) & (offset < SEASON_MONTHS)
    out_values[sample_at[inside], offset[inside]] = np.nan_to_num(monthly[inside]).astype(np.float32)
    out_missing[sample_at[inside], offset[inside]] = month_missing[inside] | ~np.isfinite(monthly[inside])
    tiles = table["tile"].astype(str).to_numpy()[first_row] if "tile" in table else np.full(n, "")
    return SampleSeries(
        sample_id=ids,
        ewoc_code=codes.to_numpy().astype(np.int64)[first_row],
        tile=tiles,
        latlon_deg=np.stack(
            [table["lat"].to_numpy(float)[first_row], table["lon"].to_numpy(float)[first_row]], 1
        ),
        values=out_values,
        missing=out_missing,
        start_month=(start % 12).astype(np.int64),
        step=step,
    )


def labels_under(codes: np.ndarray, legend_name: str, legends: Mapping[str, Mapping[str, str]]) -> np.ndarray:
    """Each code's class name under the legend, None where the legend says 'ignore'; SampleError for an unknown
    legend or codes the legend does not list."""
    if legend_name not in legends:
        raise SampleError(f"No legend {legend_name!r}; the legends are {', '.join(sorted(legends))}.")
    mapping = legends[legend_name]
    unknown = sorted({int(c) for c in codes if str(int(c)) not in mapping})
    if unknown:
        raise SampleError(
            f"{len(unknown)} ewoc_code value(s) are not in the legend {legend_name}: "
            f"{', '.join(str(c) for c in unknown[:5])}{'...' if len(unknown) > 5 else ''}."
        )
    names = [mapping[str(int(c))] for c in codes]
    return np.array([None if name == "ignore" else name for name in names], dtype=object)


def concatenate(parts: list[SampleSeries]) -> SampleSeries:
    """Several tables' samples as one (their steps are months by then; `step` lists the tables' own)."""
    if not parts:
        raise SampleError("No samples.")
    return SampleSeries(
        sample_id=np.concatenate([p.sample_id for p in parts]),
        ewoc_code=np.concatenate([p.ewoc_code for p in parts]),
        tile=np.concatenate([p.tile for p in parts]),
        latlon_deg=np.concatenate([p.latlon_deg for p in parts]),
        values=np.concatenate([p.values for p in parts]),
        missing=np.concatenate([p.missing for p in parts]),
        start_month=np.concatenate([p.start_month for p in parts]),
        step="+".join(sorted({p.step for p in parts})),
    )
