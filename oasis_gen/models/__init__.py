"""Model layer: Keras layers and models, and how they are saved and loaded (knows nothing of runs).

- ``quantizer``: the EMA vector quantizer with dead-code restart.
- ``vqvae``: the hierarchical VQ-VAE-2 (encoders, decoders, two codebooks).
- ``pixelcnn``: gated PixelCNN layers (causal convolutions, gated blocks, attention).
- ``priors``: the top and bottom priors built from those layers.
- ``dcgan``: the DCGAN latent-map baseline prior.
- ``precision``: dtype policies (``--precision``), scoped and per model.
- ``distribute``: loss and log shaping for ``tf.distribute`` replicas.
- ``loading``: atomic saving and safe loading of ``.keras`` files in a chosen precision.
"""
