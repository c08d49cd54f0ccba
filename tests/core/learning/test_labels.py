"""Label files as a model owner brings them: the class field offered first is a text one."""

import json

from core.learning.labels import label_fields, read_labels


def test_text_fields_come_first_so_the_class_field_defaults_to_one(tmp_path):
    square = {"type": "Polygon", "coordinates": [[[14.5, 46.0], [14.51, 46.0], [14.51, 46.01], [14.5, 46.0]]]}
    features = [
        {"type": "Feature", "properties": {"index": i, "code": 10 + i, "land_use": name}, "geometry": square}
        for i, name in enumerate(["forest", "meadow"])
    ]
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert label_fields(path) == ["land_use", "index", "code"]  # the file's order among each kind
    assert read_labels(path, label_fields(path)[0], 10_000).legend == ("forest", "meadow")
