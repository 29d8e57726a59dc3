import pytest
from pydantic import ValidationError

from model.config import ROOT, load_settings


def test_params_yaml_loads_with_paths_under_the_project():
    settings = load_settings()
    assert settings.paths.model_store == ROOT / "model-store"
    assert settings.model.name == "mymodel"


def test_a_split_out_of_time_order_is_refused():
    settings = load_settings()
    with pytest.raises(ValidationError, match="strictly ordered"):
        settings.with_overrides({"data": {"split": {"valid_start": "2013-12-01", "test_start": "2013-11-01"}}})


def test_unknown_keys_are_refused():
    with pytest.raises(ValidationError):
        load_settings().with_overrides({"train": {"epochs": 3}})


def test_the_server_loads_the_archive_of_the_model_params_yaml_names():
    properties = dict(
        line.split("=", 1)
        for line in (ROOT / "config.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert properties["load_models"] == f"{load_settings().model.name}.mar"
