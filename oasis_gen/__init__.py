"""oasis_gen: generate realistic 2D brain MRI slices with a hierarchical VQ-VAE-2 and PixelCNN priors.

Modules (one job each; see DESIGN.md): ``config``, ``data``, ``phantom``, ``quantizer``, ``vqvae``,
``prior``, ``sampling``, ``metrics``, ``pipeline``, ``bench``, ``evaluate``.

Importing the package does no work and does not import TensorFlow; the modules that need it
import it themselves.
"""

import os

# TensorFlow's C++ start-up chatter (CPU feature notices, plugin registration) drowns the
# progress output of the CLIs; warnings and errors still show. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
