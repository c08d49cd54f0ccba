"""Accuracy and area from a stratified random sample of reference observations: the sample's size and allocation,
and the estimators analysts report, with their standard errors and 95 % confidence intervals.

- Strata = the map's classes: Olofsson et al. (2013), Remote Sensing of Environment 129: 122-131, and Olofsson et
  al. (2014), "Good practices for estimating area and assessing accuracy of land change", Remote Sensing of
  Environment 148: 42-57 (sample size: their eq. 13; estimators: eqs. 2-10 there, with the variances of 2013).
- Strata other than the map's classes (a sample drawn on another map): Stehman (2014), International Journal of
  Remote Sensing 35: 4923-4939, whose ratio estimators with indicator variables reduce to the former when each
  stratum is a map class (except for the finite population correction, which Stehman keeps).

Pure functions on counts and labels: reading rasters and point files is core.learning.reference_sample's.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import AppError

Z95 = 1.96  # a 95 % interval is +- 1.96 standard errors, as the papers (and so their printed digits) take it
DEFAULT_USERS_ACCURACY = 0.8  # the expected user's accuracy of a class nobody gave one for


class SampleError(AppError):
    """A reference sample these estimators cannot use; the sentence says why and what to do."""


def sample_size(weights: Sequence[float], users_accuracies: Sequence[float], target_se: float) -> int:
    """Olofsson et al. (2014) eq. 13: n = (sum W_i S_i / S(O))^2 with S_i = sqrt(U_i (1 - U_i)), the number of
    sample units for which the overall accuracy's standard error is about `target_se` (rounded up)."""
    if not 0 < target_se < 1:
        raise SampleError(f"The target standard error must be between 0 and 1 (got {target_se}).")
    spread = sum(w * math.sqrt(u * (1 - u)) for w, u in zip(weights, users_accuracies, strict=True))
    return math.ceil((spread / target_se) ** 2)


def allocate(total: int, pixels: Sequence[int], min_per_class: int) -> list[int]:
    """Split `total` sample units among strata with `pixels` each, as Olofsson et al. (2014) advise: a stratum
    whose share by area falls below `min_per_class` gets that minimum (never more than it has pixels), and the
    rest of the total goes to the others in proportion to their area. The total stays `total` unless the
    minimums alone exceed it (then each stratum gets its minimum)."""
    floors = [min(min_per_class, count) for count in pixels]
    if sum(floors) >= total:
        return floors
    fixed: set[int] = set()
    while True:  # a stratum held at its minimum leaves less for the others, which may push one more below it
        rest = total - sum(floors[i] for i in fixed)
        free = [i for i in range(len(pixels)) if i not in fixed]
        area = sum(pixels[i] for i in free)
        shares = {i: rest * pixels[i] / area for i in free}
        below = {i for i in free if shares[i] < floors[i]}
        if not below:
            break
        fixed |= below
    counts = [floors[i] if i in fixed else math.floor(shares[i]) for i in range(len(pixels))]
    # The units lost to rounding down go to the largest remainders.
    for i in sorted(free, key=lambda i: shares[i] - math.floor(shares[i]), reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return [min(count, available) for count, available in zip(counts, pixels, strict=True)]


@dataclass(frozen=True)
class Estimate:
    """An estimate with its standard error; `ci95` is the half-width of its 95 % confidence interval."""

    value: float
    se: float

    @property
    def ci95(self) -> float:
        return Z95 * self.se


@dataclass(frozen=True)
class ClassEstimates:
    """One class: its sample units, its accuracies and its area as mapped and as estimated from the sample."""

    name: str
    n: int  # sample units the map gave this class
    users_accuracy: Estimate | None  # None: no sample unit mapped as this class (undefined)
    producers_accuracy: Estimate | None  # None: the class is absent from the reference (undefined)
    area_proportion: Estimate  # of the whole mapped area, by the reference classes
    mapped_area_ha: float
    area_ha: Estimate


@dataclass(frozen=True)
class AccuracyReport:
    """The error matrix in sample counts (rows: map, columns: reference) and in estimated area proportions,
    overall accuracy and each class's estimates."""

    names: list[str]
    counts: list[list[int]]
    proportions: list[list[float]]
    overall_accuracy: Estimate
    classes: list[ClassEstimates]
    total_area_ha: float


def error_counts(names: Sequence[str], map_labels: Sequence[str], reference_labels: Sequence[str]) -> np.ndarray:
    """The error matrix in sample counts: rows the map's class, columns the reference's, in `names`' order."""
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros((len(names), len(names)), dtype=int)
    for mapped, reference in zip(map_labels, reference_labels, strict=True):
        counts[index[mapped], index[reference]] += 1
    return counts


def stratified_by_map_classes(
    names: Sequence[str], map_labels: Sequence[str], reference_labels: Sequence[str], pixels: Mapping[str, int],
    pixel_area_ha: float,
) -> AccuracyReport:  # fmt: skip
    """Olofsson et al.'s estimators for a stratified random sample whose strata are the map's classes.

    `names`: the classes, in the order to report; `map_labels`/`reference_labels`: each sample unit's map and
    reference class; `pixels`: each class's mapped pixels (the strata sizes)."""
    k = len(names)
    counts = error_counts(names, map_labels, reference_labels)
    n_row = counts.sum(axis=1)
    for name, units in zip(names, n_row, strict=True):
        if pixels.get(name, 0) > 0 and units < 2:
            raise SampleError(
                f"The map class '{name}' has {units} sample point(s): at least 2 are needed to estimate its "
                "variance. Label more points of it (or draw a larger sample)."
            )
    strata = np.array([pixels.get(name, 0) for name in names], dtype=float)
    total_pixels = strata.sum()
    weights = strata / total_pixels
    row_share = np.divide(counts, n_row[:, None], out=np.zeros((k, k)), where=n_row[:, None] > 0)
    p = weights[:, None] * row_share  # estimated area proportions (eq. 4 of 2014)
    denominator = np.maximum(n_row - 1, 1)
    users = np.diag(row_share)
    overall = float(np.trace(p))
    overall_var = float(np.sum(weights**2 * users * (1 - users) / denominator))
    column = p.sum(axis=0)  # the classes' area proportions by the reference (eq. 9 of 2014)
    area_var = np.sum((weights[:, None] * p - p**2) / denominator[:, None], axis=0)
    classes = []
    for j, name in enumerate(names):
        producers = p[j, j] / column[j] if column[j] > 0 else 0.0
        # Olofsson et al. (2013) eq. 6: the producer's accuracy's variance (strata sizes in pixels).
        estimated_column_pixels = float(np.sum(strata * row_share[:, j]))
        others = sum(
            strata[i] ** 2 * row_share[i, j] * (1 - row_share[i, j]) / denominator[i] for i in range(k) if i != j
        )
        producers_var = (
            (strata[j] ** 2 * (1 - producers) ** 2 * users[j] * (1 - users[j]) / denominator[j])
            + producers**2 * others
        ) / estimated_column_pixels**2 if estimated_column_pixels > 0 else 0.0  # fmt: skip
        total_ha = total_pixels * pixel_area_ha
        classes.append(
            ClassEstimates(
                name=name,
                n=int(n_row[j]),
                users_accuracy=Estimate(float(users[j]), math.sqrt(users[j] * (1 - users[j]) / denominator[j]))
                if n_row[j] > 0
                else None,
                producers_accuracy=Estimate(float(producers), math.sqrt(producers_var)) if column[j] > 0 else None,
                area_proportion=Estimate(float(column[j]), math.sqrt(area_var[j])),
                mapped_area_ha=float(strata[j] * pixel_area_ha),
                area_ha=Estimate(float(column[j] * total_ha), math.sqrt(area_var[j]) * total_ha),
            )
        )
    return AccuracyReport(
        names=list(names),
        counts=counts.tolist(),
        proportions=p.tolist(),
        overall_accuracy=Estimate(overall, math.sqrt(overall_var)),
        classes=classes,
        total_area_ha=float(total_pixels * pixel_area_ha),
    )


@dataclass(frozen=True)
class StratumTotals:
    """Per stratum h: N_h (pixels), n_h (sample units), and the sample means, variances and covariance of the
    indicator variables y and x (Stehman 2014's notation)."""

    sizes: np.ndarray
    units: np.ndarray
    y_mean: np.ndarray
    x_mean: np.ndarray
    y_var: np.ndarray
    x_var: np.ndarray
    xy_cov: np.ndarray


def stratum_totals(strata: np.ndarray, sizes: Mapping[str, int], y: np.ndarray, x: np.ndarray) -> StratumTotals:
    names = list(sizes)
    rows = []
    for name in names:
        inside = strata == name
        units = int(inside.sum())
        if units < 2:
            raise SampleError(
                f"The stratum '{name}' has {units} sample point(s): at least 2 are needed to estimate its "
                "variance."
            )
        ys, xs = y[inside].astype(float), x[inside].astype(float)
        rows.append(
            (sizes[name], units, ys.mean(), xs.mean(), ys.var(ddof=1), xs.var(ddof=1), np.cov(ys, xs, ddof=1)[0, 1])
        )
    columns = [np.array(column, dtype=float) for column in zip(*rows, strict=True)]
    return StratumTotals(*columns)


def stehman_mean(strata: np.ndarray, sizes: Mapping[str, int], y: np.ndarray) -> Estimate:
    """Stehman (2014) eqs. 3 and 25: the population mean of an indicator y (a proportion of area, or overall
    accuracy) with its standard error, finite population correction included."""
    t = stratum_totals(strata, sizes, y, y)
    total = t.sizes.sum()
    value = float(np.sum(t.sizes * t.y_mean) / total)
    variance = float(np.sum(t.sizes**2 * (1 - t.units / t.sizes) * t.y_var / t.units) / total**2)
    return Estimate(value, math.sqrt(variance))


def stehman_ratio(strata: np.ndarray, sizes: Mapping[str, int], y: np.ndarray, x: np.ndarray) -> Estimate:
    """Stehman (2014) eqs. 2 and 27: a ratio of two estimated totals (a user's accuracy: y = mapped and
    referenced as the class, x = mapped as it; a producer's accuracy: x = referenced as it)."""
    t = stratum_totals(strata, sizes, y, x)
    x_total = float(np.sum(t.sizes * t.x_mean))
    if x_total == 0:
        return Estimate(0.0, 0.0)
    ratio = float(np.sum(t.sizes * t.y_mean)) / x_total
    spread = t.y_var + ratio**2 * t.x_var - 2 * ratio * t.xy_cov
    variance = float(np.sum(t.sizes**2 * (1 - t.units / t.sizes) * spread / t.units)) / x_total**2
    return Estimate(ratio, math.sqrt(max(variance, 0.0)))


def stratified_by_other_strata(
    names: Sequence[str], strata_labels: Sequence[str], map_labels: Sequence[str],
    reference_labels: Sequence[str], strata_pixels: Mapping[str, int], mapped_pixels: Mapping[str, int],
    pixel_area_ha: float,
) -> AccuracyReport:  # fmt: skip
    """Stehman's (2014) estimators, for a sample whose strata are not this map's classes (drawn on another map).
    `strata_pixels`: each stratum's size in pixels; `mapped_pixels`: this map's pixels per class (its mapped
    areas)."""
    strata = np.asarray(strata_labels)
    mapped = np.asarray(map_labels)
    reference = np.asarray(reference_labels)
    unknown = sorted(set(strata_labels) - set(strata_pixels))
    if unknown:
        raise SampleError(f"No pixel count given for the stratum/strata {', '.join(unknown)}.")
    total_pixels = float(sum(strata_pixels.values()))
    classes = []
    proportions = []
    for name in names:
        row = [stehman_mean(strata, strata_pixels, (mapped == name) & (reference == other)).value for other in names]
        proportions.append(row)
        both = (mapped == name) & (reference == name)
        area = stehman_mean(strata, strata_pixels, reference == name)
        classes.append(
            ClassEstimates(
                name=name,
                n=int((mapped == name).sum()),
                users_accuracy=stehman_ratio(strata, strata_pixels, both, mapped == name)
                if (mapped == name).any()
                else None,
                producers_accuracy=stehman_ratio(strata, strata_pixels, both, reference == name)
                if (reference == name).any()
                else None,
                area_proportion=area,
                mapped_area_ha=mapped_pixels.get(name, 0) * pixel_area_ha,
                area_ha=Estimate(area.value * total_pixels * pixel_area_ha, area.se * total_pixels * pixel_area_ha),
            )
        )
    counts = error_counts(names, map_labels, reference_labels)
    return AccuracyReport(
        names=list(names),
        counts=counts.tolist(),
        proportions=proportions,
        overall_accuracy=stehman_mean(strata, strata_pixels, mapped == reference),
        classes=classes,
        total_area_ha=total_pixels * pixel_area_ha,
    )


def report_json(report: AccuracyReport) -> dict[str, object]:
    """The `terraseg accuracy --json` object (confidence intervals as half-widths)."""
    return {
        "overall_accuracy": report.overall_accuracy.value,
        "overall_accuracy_ci95": report.overall_accuracy.ci95,
        "total_area_ha": report.total_area_ha,
        "error_matrix": {"classes": report.names, "counts": report.counts, "proportions": report.proportions},
        "classes": [
            {
                "name": c.name,
                "n": c.n,
                "mapped_area_ha": c.mapped_area_ha,
                "area_ha": c.area_ha.value,
                "area_ci95_ha": c.area_ha.ci95,
                "users_accuracy": c.users_accuracy.value if c.users_accuracy else None,
                "users_accuracy_ci95": c.users_accuracy.ci95 if c.users_accuracy else None,
                "producers_accuracy": c.producers_accuracy.value if c.producers_accuracy else None,
                "producers_accuracy_ci95": c.producers_accuracy.ci95 if c.producers_accuracy else None,
            }
            for c in report.classes
        ],
    }
