"""The one family registry (contract/families.py) and the implementations it names agree."""

from __future__ import annotations

import pytest

from contract.families import FAMILIES, family, family_of_api_name, family_of_pipeline
from contract.train_config import TrainConfig
from models.families import family_class


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_family_has_an_implementation_that_agrees(name):
    spec = FAMILIES[name]
    cls = family_class(name)
    assert cls.name == name
    if hasattr(cls, "pipeline_class"):
        assert cls.pipeline_class.__name__ == spec.pipeline
    assert family_of_pipeline(spec.pipeline) is spec and family_of_api_name(spec.api_name) is spec
    assert TrainConfig(family=name).family == name


def test_unknown_names_are_errors_that_list_the_known_ones():
    with pytest.raises(ValueError, match="family: unknown model family 'kandinsky' .*dit, sd, controlnet"):
        family("kandinsky")
    with pytest.raises(ValueError, match="sd-controlnet"):
        family_of_api_name("controlnet")  # the API name differs from the config name
    assert family_of_pipeline("KandinskyPipeline") is None


def test_the_api_offers_exactly_the_registered_families(client, auth):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["BaseModelCreate"]
    assert schema["properties"]["family"]["enum"] == [spec.api_name for spec in FAMILIES.values()]
