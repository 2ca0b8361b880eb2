"""Two logical CPU devices under MirroredStrategy must train exactly like one device with the same global batch."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from oasis_gen.models.vqvae import VQVAE2

    def one_step(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = VQVAE2(image_size=32, num_hiddens=16, num_residual_layers=1, num_residual_hiddens=8,
                           num_embeddings=16, embedding_dim=4, dead_code_threshold=1.0)
            model.build()
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        rng = np.random.default_rng(1)
        images = rng.uniform(0, 1, size=(8, 32, 32, 1)).astype("float32")
        dataset = tf.data.Dataset.from_tensor_slices(images).batch(8)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return {w.path.split("/", 1)[1]: np.array(w.numpy()) for w in model.weights}

    single = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored_strategy.num_replicas_in_sync == 2
    mirrored = one_step(mirrored_strategy)
    worst = {k: float(np.max(np.abs(single[k] - mirrored[k]))) for k in single if single[k].dtype.kind == "f"}
    codebooks = [k for k in worst if "codebook" in k or "ema_" in k]
    assert len(codebooks) == 6, codebooks
    bad = {k: v for k, v in worst.items() if v > 1e-4}
    assert not bad, bad
    assert int(np.max([single[k] for k in single if k.endswith("restarts")])) > 0  # restarts happened on both
    print("MIRRORED_OK", max(worst.values()))
""")


def test_one_mirrored_step_on_two_devices_equals_one_step_on_one():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert "MIRRORED_OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
