import numpy as np
import pytest
import tensorflow as tf
from helpers import assert_config_round_trip

from oasis_gen.models.quantizer import VectorQuantizerEMA


def _layer(num_embeddings=8, embedding_dim=4, threshold=0.0, **kwargs):
    layer = VectorQuantizerEMA(num_embeddings, embedding_dim, dead_code_threshold=threshold, **kwargs)
    layer.build((None, embedding_dim))
    return layer


def test_nearest_codes_match_numpy():
    layer = _layer(16, 5)
    inputs = np.random.default_rng(0).normal(size=(3, 7, 7, 5)).astype(np.float32)
    outputs = layer(inputs)
    codebook = layer.codebook.numpy()
    distances = ((inputs[..., None, :] - codebook) ** 2).sum(-1)
    np.testing.assert_array_equal(outputs["indices"].numpy(), distances.argmin(-1))
    np.testing.assert_allclose(outputs["distances"].numpy(), distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs["quantized"].numpy(), codebook[distances.argmin(-1)], atol=1e-6)
    np.testing.assert_allclose(layer.lookup(outputs["indices"]).numpy(), codebook[distances.argmin(-1)])
    expected_loss = 0.25 * np.mean((codebook[distances.argmin(-1)] - inputs) ** 2)
    np.testing.assert_allclose(outputs["loss"].numpy(), expected_loss, rtol=1e-5)
    counts = np.bincount(distances.argmin(-1).ravel(), minlength=16)
    probabilities = counts / counts.sum()
    nonzero = probabilities[probabilities > 0]
    np.testing.assert_allclose(outputs["perplexity"].numpy(), np.exp(-(nonzero * np.log(nonzero)).sum()), rtol=1e-5)
    assert outputs["usage"].numpy() == pytest.approx((counts > 0).mean())


def test_one_ema_step_matches_numpy():
    decay, epsilon, k = 0.9, 1e-5, 6
    layer = _layer(k, 3, decay=decay, epsilon=epsilon)
    inputs = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    codebook = layer.codebook.numpy()
    cluster, ema_sum = layer.ema_cluster_size.numpy(), layer.ema_sum.numpy()
    indices = ((inputs[:, None] - codebook) ** 2).sum(-1).argmin(-1)
    counts = np.bincount(indices, minlength=k).astype(np.float64)
    sums = np.zeros((k, 3))
    np.add.at(sums, indices, inputs)
    cluster = decay * cluster + (1 - decay) * counts
    ema_sum = decay * ema_sum + (1 - decay) * sums
    total = cluster.sum()
    expected = ema_sum / ((cluster + epsilon) / (total + k * epsilon) * total)[:, None]
    layer(inputs, training=True)
    np.testing.assert_allclose(layer.ema_cluster_size.numpy(), cluster, rtol=1e-5)
    np.testing.assert_allclose(layer.codebook.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_codebook_is_not_trainable_and_changes_only_in_training():
    layer = _layer(8, 4)
    assert layer.trainable_weights == []
    inputs = tf.random.normal((10, 4), seed=2)
    before = layer.codebook.numpy().copy()
    layer(inputs, training=False)
    tf.function(lambda x: layer(x, training=False))(inputs)
    np.testing.assert_array_equal(layer.codebook.numpy(), before)
    layer(inputs, training=True)
    eager = layer.codebook.numpy().copy()
    assert not np.array_equal(eager, before)
    tf.function(lambda x: layer(x, training=True))(inputs)
    assert not np.array_equal(layer.codebook.numpy(), eager)


def test_dead_code_restart_moves_a_dead_code_onto_the_data():
    layer = _layer(4, 2, threshold=0.5)
    layer.codebook.assign(np.array([[100.0, 100.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32))
    layer.ema_sum.assign(layer.codebook)
    layer.ema_cluster_size.assign([0.1, 5.0, 5.0, 5.0])
    inputs = np.random.default_rng(3).normal(size=(50, 2)).astype(np.float32)
    layer(inputs, training=True)
    moved = layer.codebook.numpy()[0]
    assert np.min(np.abs(inputs - moved).sum(-1)) < 1e-5  # code 0 now sits on an input vector
    assert int(layer.restarts.numpy()) == 1
    assert layer.ema_cluster_size.numpy()[0] == pytest.approx(1.0)


def test_straight_through_gradient_reaches_the_inputs():
    layer = _layer(8, 4)
    inputs = tf.Variable(tf.random.normal((5, 4), seed=4))
    with tf.GradientTape() as tape:
        outputs = layer(inputs)
        objective = tf.reduce_sum(outputs["quantized"] * 3.0) + outputs["loss"]
    gradient = tape.gradient(objective, inputs).numpy()
    assert np.all(np.abs(gradient) > 2.0)


def test_bad_last_dimension_and_empty_batch():
    layer = VectorQuantizerEMA(8, 4)
    with pytest.raises(ValueError, match="embedding_dim=4.*\\(2, 3\\)"):
        layer(tf.zeros((2, 3)))
    layer = _layer(8, 4, threshold=1.0)
    outputs = layer(tf.zeros((0, 4)), training=True)
    assert outputs["quantized"].shape == (0, 4) and outputs["indices"].shape == (0,)
    assert np.isfinite(layer.codebook.numpy()).all()
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizerEMA(8, 4, decay=1.5)


def test_config_round_trip():
    assert_config_round_trip(VectorQuantizerEMA(16, 4, commitment_cost=0.5, decay=0.95, seed=3))


def _numpy_ema_step(codebook, cluster, ema_sum, inputs, decay, epsilon):
    """One EMA step in NumPy: (indices, new cluster sizes, new sums, new codebook)."""
    k = len(codebook)
    indices = ((inputs[:, None] - codebook) ** 2).sum(-1).argmin(-1)
    sums = np.zeros_like(ema_sum, dtype=np.float64)
    np.add.at(sums, indices, inputs)
    cluster = decay * cluster + (1 - decay) * np.bincount(indices, minlength=k)
    ema_sum = decay * ema_sum + (1 - decay) * sums
    total = cluster.sum()
    return indices, cluster, ema_sum, ema_sum / ((cluster + epsilon) / (total + k * epsilon) * total)[:, None]


@pytest.mark.parametrize("compiled", [False, True])
def test_training_output_is_looked_up_after_the_ema_update(compiled):
    layer = _layer(6, 3, decay=0.5)
    inputs = np.random.default_rng(4).normal(size=(40, 3)).astype(np.float32)
    before = layer.codebook.numpy().copy()
    indices, _, _, updated = _numpy_ema_step(before, layer.ema_cluster_size.numpy(), layer.ema_sum.numpy(),
                                             inputs, 0.5, 1e-5)
    call = tf.function(lambda x: layer(x, training=True)) if compiled else (lambda x: layer(x, training=True))
    outputs = call(inputs)
    np.testing.assert_array_equal(outputs["indices"].numpy(), indices)
    # the forward value of the straight-through output is the code as this step's update left it
    np.testing.assert_allclose(outputs["quantized"].numpy(), updated[indices], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.codebook.numpy(), updated, rtol=1e-4, atol=1e-6)
    assert not np.allclose(updated[indices], before[indices], atol=1e-3)  # the update did move the used codes


def test_restart_leaves_codes_used_in_this_batch_alone():
    layer = _layer(4, 2, threshold=0.5, decay=0.9)
    codebook = np.array([[100.0, 100.0], [0.0, 0.0], [3.0, 3.0], [-3.0, -3.0]], np.float32)
    layer.codebook.assign(codebook)
    layer.ema_sum.assign(codebook * np.array([[0.1], [0.1], [5.0], [5.0]], np.float32))
    layer.ema_cluster_size.assign([0.1, 0.1, 5.0, 5.0])  # codes 0 and 1 are both below the threshold
    rng = np.random.default_rng(5)
    inputs = np.concatenate([rng.normal(0.0, 0.1, (4, 2)), rng.normal(3.0, 0.1, (30, 2)),
                             rng.normal(-3.0, 0.1, (30, 2))]).astype(np.float32)
    indices, _, _, expected = _numpy_ema_step(codebook, layer.ema_cluster_size.numpy(), layer.ema_sum.numpy(),
                                              inputs, 0.9, 1e-5)
    assert (indices == 1).sum() == 4 and (indices == 0).sum() == 0
    outputs = layer(inputs, training=True)
    result = layer.codebook.numpy()
    # code 1 is rare but this batch used it: it follows the EMA, it is not re-seeded, and the vectors
    # matched to it are decoded from its updated value (the lookup follows the update)
    np.testing.assert_allclose(result[1:], expected[1:], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(outputs["quantized"].numpy()[indices == 1], np.tile(expected[1], (4, 1)),
                               rtol=1e-4, atol=1e-6)
    # code 0 is rare and unused: re-seeded onto one of the batch's vectors
    assert np.min(np.abs(inputs - result[0]).sum(-1)) < 1e-5
    assert int(layer.restarts.numpy()) == 1
