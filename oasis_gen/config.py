"""Configuration dataclasses, presets, JSON round trips and CLI flags.

One source of defaults: every setting is a dataclass field. Command-line flags are generated
from the fields (``--field_name``), so ``train.py``, ``generate.py`` and the benchmarks share
them. This module must not import TensorFlow.

Presets:
    quick: the built-in phantom demo and the tests (128x128 slices, small models; minutes on a CPU).
    cpu:   real 256x256 OASIS slices on a 2-core CPU (each training stage within an hour on
           the 80-subject sample).
    oasis: the full-size run for a GPU workstation (VQ-VAE-2 paper sizes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from typing import Any

from oasis_gen.fileio import atomic_write_text

CONFIG_VERSION = 1


def _field(default: Any, help: str, choices: tuple | None = None, flag: bool = True, **kwargs: Any) -> Any:
    metadata = {"help": help, "flag": flag}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


@dataclasses.dataclass
class DataConfig:
    """Where the slices are and how they are streamed (see ``oasis_gen.data.slices`` and ``oasis_gen.data.stream``)."""

    data_dir: str | None = _field(None, "OASIS-layout folder, or a flat folder of slices to split by subject",
                                  flag=False)  # the commands' own --data sets it
    image_size: int = _field(256, "side of the square images fed to the model")
    resize_method: str = _field(
        "resize", "how slices of another size are brought to image_size ('none' refuses them)",
        choices=("resize", "crop", "none"))
    on_bad_file: str = _field(
        "error", "a file that is not a decodable PNG: fail naming it, or skip it with a counted warning",
        choices=("error", "skip"))
    validate_fraction: float = _field(0.1, "fraction of subjects for validation when splitting a flat folder")
    test_fraction: float = _field(0.1, "fraction of subjects for test when splitting a flat folder")
    split_seed: int = _field(0, "seed of the subject split of a flat folder")
    cache: bool = _field(True, "keep decoded uint8 slices in memory after the first pass")
    deterministic: bool = _field(
        True, "fixed element order in the parallel decoding (an exact resume after a crash needs it; "
              "False is slightly faster)")
    include_masks: bool = _field(False, "also read the keras_png_slices_seg_* masks and yield (image, mask)")


@dataclasses.dataclass
class VQVAEConfig:
    """Hierarchical VQ-VAE-2 (Razavi et al. 2019) sizes; code grid sizes derive from these."""

    num_hiddens: int = _field(128, "channels of the encoders and decoders")
    num_residual_layers: int = _field(2, "residual blocks per encoder/decoder stack")
    num_residual_hiddens: int = _field(32, "bottleneck channels inside a residual block")
    num_embeddings: int = _field(512, "codebook size of each level")
    embedding_dim: int = _field(64, "dimension of each codebook vector")
    commitment_cost: float = _field(0.25, "weight of the commitment loss")
    decay: float = _field(0.99, "EMA decay of the codebook statistics")
    epsilon: float = _field(1e-5, "Laplace smoothing of the EMA cluster sizes")
    dead_code_threshold: float = _field(
        1.0, "a code whose EMA count (vectors per step) falls below this is re-seeded from encoder outputs "
             "(0 disables)")
    data_variance: float = _field(0.0, "variance of training pixels for the loss (0: measured from the data)")
    levels: int = _field(2, "code levels: 2 for VQ-VAE-2 (32x32 top + 64x64 bottom), 1 for a single 64x64 map "
                            "(the single-level VQ-VAE baseline)", choices=(1, 2))
    top_downsample: int = _field(2, "the top code map is the bottom map downsampled x2 (32x32 for 256x256 slices) "
                                    "or x4 (16x16)", choices=(2, 4))
    top_reconstruction_weight: float = _field(
        0.0, "weight of a top-only reconstruction term: a small head decodes the top codes alone to the slice at "
             "the bottom map's resolution, so the top codes must carry the layout (0: off)")


@dataclasses.dataclass
class PriorConfig:
    """Gated PixelCNN prior over one level's code map (van den Oord et al. 2016)."""

    hidden_channels: int = _field(128, "channels of the gated stacks")
    num_layers: int = _field(12, "gated PixelCNN blocks")
    kernel_size: int = _field(5, "vertical/horizontal stack kernel size (odd)")
    num_attention_blocks: int = _field(2, "causal self-attention blocks (top prior only: the bottom prior refuses any)")
    num_heads: int = _field(4, "attention heads")
    num_conditioning_layers: int = _field(4, "residual blocks of the top-code conditioning stack (bottom prior only)")
    dropout: float = _field(0.1, "dropout rate inside the gated blocks")
    condition_on_position: bool = _field(
        True, "condition on the axial slice position named in each file (case_NNN_slice_S), a learned bias in "
              "every gated block; generate.py --slice_index then picks positions")
    position_dropout: float = _field(
        0.0, "probability of training a map with 'no position' instead of its own, so the prior also learns the "
             "unconditional model and can be sampled with classifier-free guidance (sampling guidance)")
    mirror: bool = _field(
        False, "also train on the codes of every training slice mirrored left-right (OASIS rows run left to "
               "right, so the slice is flipped top to bottom): twice the training code maps")


@dataclasses.dataclass
class DCGANConfig:
    """The DCGAN latent-map prior baseline (Radford et al. 2016; see ``oasis_gen.models.dcgan``)."""

    noise_dim: int = _field(128, "size of the generator's noise input")
    base_channels: int = _field(64, "discriminator channels in its first layer (doubling per layer)")
    label_smoothing: float = _field(0.1, "one-sided label smoothing: real targets are 1 - this")
    discriminator_learning_rate: float = _field(2e-4, "Adam learning rate of the discriminator (beta1 0.5)")


@dataclasses.dataclass
class SamplingConfig:
    """What the pipeline's ``samples`` and ``evaluate`` stages generate (``generate.py`` has its own flags)."""

    num_samples: int = _field(16, "slices the samples stage writes to samples/")
    evaluation_samples: int = _field(64, "slices the evaluate stage generates and scores against the test split")
    temperature: str = _field("1.0", "softmax temperature of both priors, or TOP,BOTTOM (e.g. 0.9,1.0)")
    top_k: str = _field("0", "sample among the k likeliest codes (0: all), or TOP,BOTTOM")
    guidance: str = _field("0", "classifier-free guidance weight on the slice position (0: none), or TOP,BOTTOM; "
                                "needs priors trained with position_dropout")
    seed: int = _field(0, "seed of the sampling noise and of the drawn slice positions")
    batch_size: int = _field(8, "slices sampled together")

    def guidance_for(self, prior: str = "pixelcnn"):
        """The guidance weight (one value or a (top, bottom) pair) a run samples ``prior`` with: its own
        ``guidance`` for the PixelCNN priors, 0 for the DCGAN (which has no position to guide by)."""
        return one_or_pair(self.guidance, float, "sampling.guidance") if prior == "pixelcnn" else 0.0


def section_type(section: str) -> type:
    """The dataclass of ``Config`` section ``section`` (``"top_prior"`` -> ``PriorConfig``)."""
    return typing.get_type_hints(Config)[section]


def one_or_pair(text: str, kind, flag: str):
    """``kind(text)``, or a ``(top, bottom)`` tuple from ``"TOP,BOTTOM"``; ValueError naming ``flag`` otherwise."""
    try:
        values = [kind(part) for part in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise ValueError(f"{flag} takes one number or TOP,BOTTOM, got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


@dataclasses.dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training stage."""

    batch_size: int = _field(16, "global batch size")
    epochs: int = _field(10, "passes over the training split")
    steps_per_epoch: int = _field(0, "steps per epoch (0: one pass over the training split)")
    learning_rate: float = _field(3e-4, "Adam learning rate (the peak, with the cosine schedule)")
    lr_schedule: str = _field("constant", "learning-rate schedule over epochs x steps_per_epoch: linear warm-up then "
                                        "cosine decay to zero, or constant", choices=("cosine", "constant"))
    warmup_steps: int = _field(200, "linear warm-up steps of the cosine schedule (at most half the run)")
    clip_norm: float = _field(0.0, "clip gradients to this global norm (0: no clipping); the DCGAN is not clipped")
    seed: int = _field(0, "seed of weights, shuffling and dropout")
    jit_compile: bool = _field(False, "compile train steps with XLA (measured slower on CPU; try on GPU)")
    precision: str = _field(
        "auto", "compute precision: auto picks mixed_bfloat16 where the hardware has bfloat16 arithmetic (CPUs with "
                "AVX512-BF16 or AMX, GPUs of compute capability 8.0 and later) and float32 elsewhere; quantizer "
                "distances, EMA statistics, losses and logits stay float32",
        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"))
    strategy: str = _field("default", "tf.distribute strategy", choices=("default", "mirrored", "multiworker"))
    op_determinism: bool = _field(
        False, "bit-for-bit repeatable training on a GPU: deterministic kernels (slower, often 10-30% on convolution "
               "backprop; CPU kernels are deterministic already); the data order is fixed by --deterministic")
    time_limit_minutes: float = _field(0.0, "stop training cleanly after this many minutes (0: no limit)")
    checkpoint_steps: int = _field(200, "also checkpoint the full training state every N steps (0: at epoch "
                                        "ends only)")


@dataclasses.dataclass
class Config:
    """The full resolved configuration of a run, saved as ``config.json`` in its directory."""

    preset: str = "quick"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    vqvae: VQVAEConfig = dataclasses.field(default_factory=VQVAEConfig)
    top_prior: PriorConfig = dataclasses.field(default_factory=PriorConfig)
    bottom_prior: PriorConfig = dataclasses.field(default_factory=lambda: PriorConfig(num_attention_blocks=0))
    vqvae_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    top_prior_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    bottom_prior_train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    dcgan: DCGANConfig = dataclasses.field(default_factory=DCGANConfig)
    dcgan_train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(batch_size=64, epochs=25, learning_rate=2e-4))
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Builds a Config from a dict, refusing unknown sections or fields by name."""
        values = dict(values)
        version = values.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(
                f"config version {version!r} is not supported (this oasis_gen reads version {CONFIG_VERSION})")
        kwargs: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; expected some of {sorted(known)}")
        for name, value in values.items():
            section_type = hints[name]
            if dataclasses.is_dataclass(section_type):
                kwargs[name] = _section_from_dict(section_type, value, name)
            else:
                kwargs[name] = value
        return cls(**kwargs)


# Fields earlier versions wrote that no longer mean anything: dropped when read, so old runs still open.
RETIRED_FIELDS = {"data": {"shuffle_buffer"}}  # replaced by a full permutation per pass


def _section_from_dict(section_type: type, values: dict, section: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"config section {section!r} must be an object, got {type(values).__name__}")
    values = {k: v for k, v in values.items() if k not in RETIRED_FIELDS.get(section, ())}
    if section_type is TrainConfig and "mixed_precision" in values:
        # a run stored before precision, schedules and clipping existed keeps training as it began
        values.setdefault("precision", "mixed_float16" if values.pop("mixed_precision") else "float32")
        values.setdefault("lr_schedule", "constant")
        values.setdefault("clip_norm", 0.0)
    known = {f.name for f in dataclasses.fields(section_type)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} in config section {section!r}")
    return section_type(**values)


def _preset_quick() -> Config:
    return Config(
        preset="quick",
        data=DataConfig(image_size=128),
        vqvae=VQVAEConfig(num_hiddens=64, num_residual_layers=1, num_residual_hiddens=32,
                          num_embeddings=128, embedding_dim=32),
        top_prior=PriorConfig(hidden_channels=32, num_layers=4, kernel_size=3, num_attention_blocks=1,
                              num_heads=2, dropout=0.0),
        bottom_prior=PriorConfig(hidden_channels=32, num_layers=4, kernel_size=3, num_attention_blocks=0,
                                 num_heads=2, num_conditioning_layers=1, dropout=0.0),
        vqvae_train=TrainConfig(batch_size=16, epochs=6, learning_rate=1e-3),
        top_prior_train=TrainConfig(batch_size=16, epochs=10, learning_rate=1e-3),
        bottom_prior_train=TrainConfig(batch_size=16, epochs=4, learning_rate=1e-3),
        dcgan=DCGANConfig(noise_dim=64, base_channels=16),
        dcgan_train=TrainConfig(batch_size=32, epochs=10, learning_rate=2e-4),
    )


def _preset_cpu() -> Config:
    # The whole pipeline, evaluation included, fits 100 minutes on a 2-core AVX512-BF16 CPU: stage 1
    # 27 min, top prior 24, bottom prior 30, the rest about 10. The 16x16 top map (x4 below the
    # bottom map) gives the top prior 256 positions instead of 1,024, so a prior this small sees
    # each training slice a dozen times in its budget and can learn the layout.
    return Config(
        preset="cpu",
        data=DataConfig(image_size=256),
        # top-only reconstruction term 0.2: the top codes carry the layout (ventricles, midline), so the top
        # prior lays it down; samples placed at their position 97% instead of 64% of the time, C2ST AUC 0.79
        # instead of 0.82, on the validation split, at stage-1 test SSIM 0.953 instead of 0.962 (README)
        vqvae=VQVAEConfig(num_hiddens=128, num_residual_layers=2, num_residual_hiddens=32,
                          num_embeddings=512, embedding_dim=64, top_downsample=4, top_reconstruction_weight=0.2),
        # mirrored training codes: validation NLL 1.341 instead of 1.417 bits per code, C2ST AUC 0.80
        # instead of 0.82 on the validation split (README, "What we tried")
        # position dropout 0.1: the priors also learn the unconditional model, for classifier-free guidance
        top_prior=PriorConfig(hidden_channels=96, num_layers=10, kernel_size=5, num_attention_blocks=2,
                              num_heads=4, dropout=0.1, mirror=True, position_dropout=0.1),
        bottom_prior=PriorConfig(hidden_channels=64, num_layers=8, kernel_size=5, num_attention_blocks=0,
                                 num_heads=4, num_conditioning_layers=2, dropout=0.1, position_dropout=0.1),
        vqvae_train=TrainConfig(batch_size=16, epochs=60, learning_rate=7e-4, time_limit_minutes=27.0),
        top_prior_train=TrainConfig(batch_size=32, epochs=200, learning_rate=1e-3, time_limit_minutes=24.0),
        bottom_prior_train=TrainConfig(batch_size=32, epochs=60, learning_rate=1e-3, time_limit_minutes=30.0),
        dcgan_train=TrainConfig(batch_size=64, epochs=60, learning_rate=2e-4, time_limit_minutes=30.0),
        sampling=SamplingConfig(guidance="1.0,0"),
    )


def _preset_oasis() -> Config:
    return Config(
        preset="oasis",
        data=DataConfig(image_size=256),
        vqvae=VQVAEConfig(num_hiddens=128, num_residual_layers=2, num_residual_hiddens=32,
                          num_embeddings=512, embedding_dim=64),
        top_prior=PriorConfig(hidden_channels=256, num_layers=20, kernel_size=5, num_attention_blocks=4,
                              num_heads=8, dropout=0.1, position_dropout=0.1),
        bottom_prior=PriorConfig(hidden_channels=256, num_layers=20, kernel_size=5, num_attention_blocks=0,
                                 num_heads=8, num_conditioning_layers=10, dropout=0.1, position_dropout=0.1),
        vqvae_train=TrainConfig(batch_size=32, epochs=100, learning_rate=3e-4),
        top_prior_train=TrainConfig(batch_size=32, epochs=100, learning_rate=3e-4),
        bottom_prior_train=TrainConfig(batch_size=32, epochs=100, learning_rate=3e-4),
    )


PRESETS = {"quick": _preset_quick, "cpu": _preset_cpu, "oasis": _preset_oasis}


def preset(name: str) -> Config:
    """Returns a fresh Config for the preset ``name`` (one of ``quick``, ``cpu``, ``oasis``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Writes ``config`` as indented JSON, atomically (temporary file, then rename)."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")


def load_config(path: str | os.PathLike) -> Config:
    """Reads a Config written by ``save_config``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not valid JSON or holds unknown sections/fields.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no config file at {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    try:
        return Config.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


# ----------------------------------------------------------------------------- CLI flags

def _flag_type(annotation: Any) -> type:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        return args[0]
    return annotation


SECTION_TITLES = {"data": "data", "vqvae": "VQ-VAE-2 model", "vqvae_train": "VQ-VAE-2 training",
                  "top_prior": "top prior model", "bottom_prior": "bottom prior model",
                  "top_prior_train": "top prior training", "bottom_prior_train": "bottom prior training",
                  "sampling": "samples and evaluate stages", "dcgan": "DCGAN prior model",
                  "dcgan_train": "DCGAN prior training"}


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def preset_defaults(sections: typing.Sequence[str], name: str) -> str:
    """What field ``name`` of ``sections`` is in each preset, as few words as the values allow:
    ``default 16``, ``quick 10, cpu 6, oasis 100``, or per section when they differ."""
    table = {section: {preset_name: _shown(getattr(getattr(make(), section), name))
                       for preset_name, make in PRESETS.items()} for section in sections}
    rows = list(table.values())
    if all(row == rows[0] for row in rows):
        values = set(rows[0].values())
        if len(values) == 1:
            return f"default {values.pop()}"
        return ", ".join(f"{preset_name} {value}" for preset_name, value in rows[0].items())
    return "; ".join(f"{SECTION_TITLES.get(section, section)}: "
                     + ", ".join(f"{preset_name} {value}" for preset_name, value in row.items())
                     for section, row in table.items())


def add_flags(parser: argparse.ArgumentParser, section_type: type, sections: typing.Sequence[str] = (),
              title: str | None = None, skip: typing.Collection[str] = (), prefix: str = "") -> None:
    """Adds one ``--field_name`` flag per field of the dataclass ``section_type``.

    Every flag defaults to None (not given), so presets and stored configs are only overridden by
    what the user typed. The help shows each preset's value of the field in ``sections`` (the
    config sections the flag sets; with none, the dataclass default), and the allowed values of a
    field with choices. Fields marked ``flag=False`` and those in ``skip`` get no flag. ``prefix``
    keeps two parsers' flags apart in one namespace (read them with the same prefix).
    """
    group = parser.add_argument_group(title or " / ".join(SECTION_TITLES.get(s, s) for s in sections)
                                      or section_type.__name__)
    hints = typing.get_type_hints(section_type)
    for field in dataclasses.fields(section_type):
        if not field.metadata.get("flag", True) or field.name in skip:
            continue
        flag_type = _flag_type(hints[field.name])
        defaults = preset_defaults(sections, field.name) if sections else f"default {_shown(field.default)}"
        described = f"{field.metadata.get('help', '')} ({defaults})"
        kwargs: dict[str, Any] = {"default": None, "help": described.replace("%", "%%")}  # argparse formats help
        if flag_type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = flag_type
            if "choices" in field.metadata:
                kwargs["choices"] = field.metadata["choices"]  # argparse shows them as the metavar
            else:
                kwargs["metavar"] = field.name.upper()
        group.add_argument(f"--{field.name}", dest=f"{prefix}{section_type.__name__}.{field.name}", **kwargs)


def given_flags(args: argparse.Namespace, section_type: type, prefix: str = "") -> dict[str, Any]:
    """Returns the fields of ``section_type`` that were given on the command line."""
    given = {}
    for field in dataclasses.fields(section_type):
        value = getattr(args, f"{prefix}{section_type.__name__}.{field.name}", None)
        if value is not None:
            given[field.name] = value
    return given


def apply_flags(section: Any, given: dict[str, Any]) -> Any:
    """Returns a copy of the dataclass ``section`` with the ``given`` fields replaced."""
    return dataclasses.replace(section, **given)
