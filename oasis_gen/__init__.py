"""oasis_gen: generate realistic 2D brain MRI slices with a hierarchical VQ-VAE-2 and PixelCNN priors.

Modules (one job each; see DESIGN.md): ``config``, ``data``, ``phantom``, ``quantizer``, ``vqvae``,
``prior``, ``sampling``, ``metrics``, ``pipeline``, ``bench``, ``evaluate``.

Importing the package does no work and does not import TensorFlow; the modules that need it
import it themselves.
"""

import os

# TensorFlow's C++ logging (start-up notices, harmless Grappler errors) drowns the progress output;
# only fatal messages show unless the user set the level (their setting wins; see ``console``).
USER_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
