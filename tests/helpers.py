"""Reusable checks in the spirit of keras-hub's run_serialization_test / run_model_saving_test."""

import json

import keras
import numpy as np


def assert_config_round_trip(obj):
    """``from_config(get_config())`` rebuilds an object with the same config (compared as sorted JSON)."""
    config = obj.get_config()
    rebuilt = type(obj).from_config(config)
    assert json.dumps(rebuilt.get_config(), sort_keys=True, default=str) == json.dumps(
        config, sort_keys=True, default=str)
    return rebuilt


def assert_saving_round_trip(model, inputs, path, atol=1e-6):
    """Saves ``model`` to a .keras file, loads it with safe_mode, and compares outputs."""
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, type(model))
    np.testing.assert_allclose(np.asarray(loaded(inputs)), np.asarray(model(inputs)), atol=atol)
    return loaded
