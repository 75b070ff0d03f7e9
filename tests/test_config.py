"""SweepConfig: defaults, file < flags precedence, and one-line errors for each bad input."""
import tomllib

import pytest

from evalkit.config import DEFAULT_STEPS, SweepConfig, load_config, to_toml, make_config
from evalkit.errors import EvalkitError


def test_defaults_match_the_documented_sweep():
    config = load_config()
    assert config.model == "builtin:mixture"
    assert config.schedulers is None and config.reference_scheduler is None  # resolved by the model family
    assert config.steps == DEFAULT_STEPS == (1, 2, 3, 4, 6, 8, 10, 15, 20, 25, 30, 40, 50)
    assert config.seeds == (0, 1, 2, 3)
    assert config.reference_steps > max(config.steps)
    assert config.prompts_path().is_file()


def test_flags_override_the_file_and_paths_are_relative_to_it(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n")
    file = tmp_path / "sweep.toml"
    file.write_text('steps = [1, 2, 4]\nseeds = 2\nprompts = "p.txt"\nschedulers = ["euler"]\n')
    config = load_config(file, steps="3,5", schedulers=None)
    assert config.steps == (3, 5)
    assert config.seeds == (0, 1)
    assert config.schedulers == ("euler",)
    assert config.prompts == str(tmp_path / "p.txt")


def test_resolved_config_round_trips_through_toml():
    config = load_config(steps="1,2", seeds="5,7", guidance=3.0)
    assert make_config(tomllib.loads(to_toml(config))) == config


@pytest.mark.parametrize("values, fragment", [
    ({"stepz": [1]}, "unknown key 'stepz' in config: did you mean 'steps'?"),
    ({"steps": [0, 2]}, "steps must be positive integers, got 0"),
    ({"steps": [1.5]}, "steps must be positive integers, got 1.5"),
    ({"steps": "1,x"}, "steps must be positive integers, got 'x'"),
    ({"seeds": 0}, "seeds must be at least 1"),
    ({"seeds": [1, 1]}, "seeds has duplicates"),
    ({"reference_steps": 50}, "reference_steps (50) must exceed the largest swept step count (50)"),
    ({"guidance": "high"}, "guidance must be a number"),
    ({"schedulers": []}, "schedulers is empty"),
    ({"batch_size": 0}, "batch_size must be positive integers"),
    ({"backend": "dask"}, "unknown backend 'dask': use local or ray"),
    ({"workers": 0}, "workers must be positive integers, got 0"),
    ({"gpus_per_worker": -1}, "gpus_per_worker must be >= 0, got -1"),
    ({"gpus_per_worker": "one"}, "gpus_per_worker must be a number"),
])
def test_bad_values_raise_one_line_errors(values, fragment):
    with pytest.raises(EvalkitError) as info:
        make_config(values)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_invalid_toml(tmp_path):
    with pytest.raises(EvalkitError, match="config file .*missing.toml not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = [1, 2\n")
    with pytest.raises(EvalkitError, match="bad.toml is not valid TOML .*: fix the syntax"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("modle = 'x'\n")
    with pytest.raises(EvalkitError, match="unknown key 'modle' in .*unknown.toml: did you mean 'model'"):
        load_config(unknown)


def test_run_dir_defaults_to_reports_and_model_name():
    assert str(SweepConfig().run_dir()) == "reports/builtin-mixture"
    assert str(SweepConfig(model="diffusers:org/Name").run_dir()) == "reports/diffusers-org-name"
