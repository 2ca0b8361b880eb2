import argparse
import json

import pytest

from oasis_gen import config


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_preset_json_round_trip(tmp_path, name):
    original = config.preset(name)
    path = tmp_path / "config.json"
    config.save_config(original, path)
    loaded = config.load_config(path)
    assert loaded == original
    assert json.dumps(loaded.to_dict(), sort_keys=True) == json.dumps(original.to_dict(), sort_keys=True)


def test_presets_differ_in_size():
    quick, cpu, oasis = (config.preset(n) for n in ("quick", "cpu", "oasis"))
    assert quick.data.image_size < cpu.data.image_size == oasis.data.image_size == 256
    assert oasis.vqvae.num_hiddens >= 128 and oasis.vqvae.num_embeddings == 512
    assert oasis.top_prior.hidden_channels > cpu.top_prior.hidden_channels > quick.top_prior.hidden_channels


def test_unknown_preset_names_it():
    with pytest.raises(ValueError, match="'huge'"):
        config.preset("huge")


def test_load_rejects_unknown_fields_and_versions(tmp_path):
    values = config.preset("quick").to_dict()
    values["vqvae"]["num_embed"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="num_embed"):
        config.load_config(path)
    values = config.preset("quick").to_dict()
    values["version"] = 99
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="version 99"):
        config.load_config(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        config.load_config(path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        config.load_config(tmp_path / "missing.json")


def test_flags_generated_from_fields_parse_back():
    parser = argparse.ArgumentParser()
    config.add_flags(parser, config.DataConfig)
    config.add_flags(parser, config.TrainConfig)
    args = parser.parse_args(["--image_size", "128", "--no-cache", "--resize_method", "crop",
                              "--learning_rate", "0.01", "--strategy", "mirrored"])
    data_given = config.given_flags(args, config.DataConfig)
    assert data_given == {"image_size": 128, "cache": False, "resize_method": "crop"}
    train = config.apply_flags(config.TrainConfig(), config.given_flags(args, config.TrainConfig))
    assert train.learning_rate == 0.01 and train.strategy == "mirrored" and train.batch_size == 16
    with pytest.raises(SystemExit):
        parser.parse_args(["--resize_method", "stretch"])


def test_a_one_level_model_drops_the_presets_top_only_term_unless_asked(tmp_path):
    from oasis_gen import rundir

    assert config.preset("cpu").vqvae.top_reconstruction_weight > 0
    single = rundir.open_run(str(tmp_path / "single"), "cpu", {"vqvae": {"levels": 1}})
    assert single.config.vqvae.levels == 1 and single.config.vqvae.top_reconstruction_weight == 0.0
    assert config.load_config(str(tmp_path / "single" / "config.json")).vqvae.top_reconstruction_weight == 0.0
    two = rundir.open_run(str(tmp_path / "two"), "cpu", {"vqvae": {"num_embeddings": 64}})
    assert two.config.vqvae.top_reconstruction_weight == config.preset("cpu").vqvae.top_reconstruction_weight
    asked = rundir.open_run(str(tmp_path / "asked"), "cpu", {"vqvae": {"levels": 1, "top_reconstruction_weight": 0.5}})
    assert asked.config.vqvae.top_reconstruction_weight == 0.5  # the model then refuses it, by name
