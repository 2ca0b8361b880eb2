"""Training speed of the PyTorch VQ-VAE-2 reference, measured beside ours by ``bench train --torch_reference``.

The reference (rosinality/vq-vae-2-pytorch) is not part of this project: fetch it yourself and
pass its folder (``vqvae.py`` and its ``distributed`` package) as ``--torch_reference DIR``;
PyTorch must be installed (``pip install torch``). Its model is built with this project's ``oasis`` sizes (one
input channel, 128 channels, 2 residual blocks of 32, 512 codes of 64 dimensions per level) and
trained as its own training script does: MSE plus 0.25 times the latent loss, Adam 3e-4.

``measure_in_child`` runs ``measure`` in a child process, so each measurement gets a fresh allocator
and its own ``GLIBC_TUNABLES``; the child prints one JSON object.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

# The malloc tuning the reference's speed is usually quoted with: no trimming, no mmap for big blocks.
TUNED_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def measure(path: str, batch_size: int = 8, steps: int = 20, warmup: int = 5, bfloat16: bool = False,
            image_size: int = 256) -> dict:
    """Median images/second of the reference's training step (``torch.autocast`` bfloat16 when asked)."""
    source = os.path.join(path, "vqvae.py")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no vqvae.py in {path}: pass the folder of the fetched PyTorch reference")
    import torch
    sys.path.insert(0, os.path.abspath(path))  # the reference imports its own helper package
    spec = importlib.util.spec_from_file_location("reference_vqvae", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.VQVAE(in_channel=1, channel=128, n_res_block=2, n_res_channel=32, embed_dim=64, n_embed=512)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    images = torch.rand(batch_size, 1, image_size, image_size)
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            out, latent_loss = model(images)
            loss = torch.nn.functional.mse_loss(out.float(), images) + 0.25 * latent_loss.float().mean()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {"images_per_s": round(batch_size / float(np.median(times[warmup:])), 2), "batch_size": batch_size,
            "bfloat16_autocast": bfloat16, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def measure_in_child(path: str, batch_size: int, steps: int, warmup: int, bfloat16: bool,
                     tuned_malloc: bool = True) -> dict:
    """``measure`` in a fresh Python process (with the tuned malloc unless ``tuned_malloc`` is False)."""
    env = dict(os.environ)
    if tuned_malloc:
        env["GLIBC_TUNABLES"] = TUNED_MALLOC
    call = ("import json, sys; from oasis_gen.benchmarks.torch_reference import measure; "
            "print(json.dumps(measure(*json.loads(sys.argv[1]))))")
    command = [sys.executable, "-c", call, json.dumps([path, batch_size, steps, warmup, bfloat16])]
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"the PyTorch reference benchmark failed: {finished.stderr.strip()[-2000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])
