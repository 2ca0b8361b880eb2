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


def _flat(value) -> list:
    """A layer's outputs as a flat list (a tuple/list of tensors, a dict in key order, or one tensor)."""
    if isinstance(value, dict):
        value = [value[key] for key in sorted(value)]
    if not isinstance(value, (list, tuple)):
        value = [value]
    return [v for v in value if v is not None]


def _outputs(value):
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in _flat(value)]


def run_layer_test(layer_class, init_kwargs, inputs, expected_shapes, call_kwargs=None, tmp_path=None,
                   policies=("float32", "mixed_bfloat16"), atol=1e-5, symbolic=True):
    """One check every oasis_gen layer and model passes, in the spirit of keras-hub's ``run_layer_test``.

    - eager outputs have ``expected_shapes`` (one per output, in order) and are finite;
    - the symbolic call (``keras.Input`` of the same shapes, batch unknown) gives the same shapes;
    - ``from_config(get_config())`` rebuilds the same config, and with the same weights the same outputs;
    - under every policy in ``policies`` the weights stay float32 and the outputs are finite and close
      to float32's (bfloat16 keeps about 3 significant digits);
    - with ``tmp_path``, a model saved to ``.keras`` loads with ``safe_mode`` and gives the same outputs.
    """
    call_kwargs = call_kwargs or {}
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    layer = layer_class(**init_kwargs)
    reference = _outputs(layer(*inputs, **call_kwargs))
    assert [tuple(o.shape) for o in reference] == [tuple(s) for s in expected_shapes]
    assert all(np.isfinite(o.astype(np.float64)).all() for o in reference)

    if symbolic:
        placeholders = [keras.Input(shape=np.shape(x)[1:], dtype=str(np.asarray(x).dtype)) for x in inputs]
        shapes = [tuple(o.shape) for o in _flat(layer(*placeholders, **call_kwargs))]
        assert [s[1:] for s in shapes] == [tuple(s)[1:] for s in expected_shapes]

    rebuilt = assert_config_round_trip(layer)
    rebuilt(*inputs, **call_kwargs)
    rebuilt.set_weights(layer.get_weights())
    for got, want in zip(_outputs(rebuilt(*inputs, **call_kwargs)), reference):
        np.testing.assert_allclose(got, want, atol=atol)

    for policy in policies:
        if policy == "float32":
            continue
        mixed = layer_class(**init_kwargs, dtype=policy)
        mixed(*inputs, **call_kwargs)
        mixed.set_weights(layer.get_weights())
        assert all(w.dtype == "float32" for w in mixed.weights if "float" in str(w.dtype)), \
            f"{policy}: a weight is not float32"
        for got, want in zip(_outputs(mixed(*inputs, **call_kwargs)), reference):
            got = got.astype(np.float64)
            assert np.isfinite(got).all(), f"{policy}: non-finite output"
            if np.issubdtype(want.dtype, np.floating):
                scale = max(1.0, float(np.abs(want).max()))
                assert np.abs(got - want).max() <= 0.1 * scale, f"{policy}: outputs far from float32's"

    if tmp_path is not None:
        if isinstance(layer, keras.Model):
            model = layer
        else:
            symbolic = [keras.Input(shape=np.shape(x)[1:], dtype=str(np.asarray(x).dtype)) for x in inputs]
            model = keras.Model(symbolic, layer(*symbolic, **call_kwargs))
        path = str(tmp_path / f"{layer_class.__name__}.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        for got, want in zip(_outputs(loaded(*inputs) if isinstance(layer, keras.Model) else loaded(inputs)),
                             _outputs(model(*inputs) if isinstance(layer, keras.Model) else model(inputs))):
            np.testing.assert_allclose(got, want, atol=atol)
    return layer


def assert_drawn_figure(path, min_side=150):
    """``path`` is a PNG figure with something drawn on it: a real size, and pixels that vary
    (a blank or single-colour canvas fails, which a file-size check would let through)."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    assert image.ndim in (2, 3) and min(image.shape[:2]) >= min_side, (path, image.shape)
    gray = image[..., :3].mean(axis=-1) if image.ndim == 3 else image.astype(float)
    assert gray.std() > 5 and len(np.unique(gray)) > 20, f"{path} looks blank"
    return image
