"""The one registry of model families: names, dataset layout, conditioning, implementation.

Every other place (the TrainConfig ``family`` field, the API's base-model families, the dataset
check at ``POST /v1/jobs``, the worker's loader) derives from :data:`FAMILIES`. Adding a family
means writing its module under ``models/families/`` and adding one line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DatasetLayout(StrEnum):
    """How a dataset's files are organised."""

    CLASS_FOLDERS = "class_folders"  # one sub-folder of images per class
    METADATA = "metadata"  # captioned images: metadata.jsonl (file_name, text[, conditioning_file_name])


class Conditioning(StrEnum):
    """What the denoiser is conditioned on."""

    CLASS_LABEL = "class_label"
    TEXT = "text"
    TEXT_AND_CONTROL = "text_and_control"


@dataclass(frozen=True)
class FamilySpec:
    """One model family as the service, the config and the library see it."""

    name: str  # TrainConfig.family
    api_name: str  # the family named in POST /v1/base-models
    dataset_layout: DatasetLayout
    conditioning: Conditioning
    implementation: str  # "module:Class" of its models.families.Family subclass
    pipeline: str  # the diffusers pipeline class its checkpoints are saved as (model_index.json)
    description: str
    flow_matching: bool = False  # trains on continuous σ with a velocity target (else DDPM timesteps)
    kohya_prefix: str | None = None  # key prefix of its LoRA in kohya's format (None: no such format)

    @property
    def text_conditioned(self) -> bool:
        return self.conditioning in (Conditioning.TEXT, Conditioning.TEXT_AND_CONTROL)

    @property
    def needs_controls(self) -> bool:
        return self.conditioning is Conditioning.TEXT_AND_CONTROL


@dataclass(frozen=True)
class Resolutions:
    """The image sizes a base model trains at: only ``native`` (``multiple`` None), or any multiple of
    ``multiple`` up to ``largest`` (None: no upper bound the model knows of). Found by loading the model."""

    native: int
    multiple: int | None = None
    largest: int | None = None

    def problem(self, resolution: int) -> str | None:
        """Why ``resolution`` cannot be trained, or None."""
        if self.multiple is None:
            return None if resolution == self.native else f"the base model generates {self.native}px images, " \
                                                           f"not {resolution}px"
        if resolution % self.multiple or (self.largest is not None and resolution > self.largest):
            upto = f" up to {self.largest}px" if self.largest is not None else ""
            return f"this base model trains at multiples of {self.multiple}px{upto}, not {resolution}px"
        return None

    def as_dict(self) -> dict[str, int | None]:
        return {"native": self.native, "multiple": self.multiple, "largest": self.largest}


FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("dit", "dit", DatasetLayout.CLASS_FOLDERS, Conditioning.CLASS_LABEL,
               "models.families.dit:DiTFamily", "DiTPipeline", "class-conditional DiT"),
    FamilySpec("sd", "sd", DatasetLayout.METADATA, Conditioning.TEXT, "models.families.sd:SDFamily",
               "StableDiffusionPipeline", "text-to-image Stable Diffusion 1.x/2.x UNet", kohya_prefix="lora_unet"),
    FamilySpec("controlnet", "sd-controlnet", DatasetLayout.METADATA, Conditioning.TEXT_AND_CONTROL,
               "models.families.controlnet:ControlNetFamily", "StableDiffusionControlNetPipeline",
               "a ControlNet trained on a Stable Diffusion base"),
    FamilySpec("sdxl", "sdxl", DatasetLayout.METADATA, Conditioning.TEXT, "models.families.sdxl:SDXLFamily",
               "StableDiffusionXLPipeline", "text-to-image Stable Diffusion XL UNet (two text encoders, micro-conditioning)",
               kohya_prefix="lora_unet"),
    FamilySpec("controlnet_sdxl", "sdxl-controlnet", DatasetLayout.METADATA, Conditioning.TEXT_AND_CONTROL,
               "models.families.sdxl_controlnet:SDXLControlNetFamily", "StableDiffusionXLControlNetPipeline",
               "a ControlNet trained on a Stable Diffusion XL base"),
    FamilySpec("sd3", "sd3", DatasetLayout.METADATA, Conditioning.TEXT, "models.families.sd3:SD3Family",
               "StableDiffusion3Pipeline", "text-to-image Stable Diffusion 3 / 3.5 MMDiT (flow matching)",
               flow_matching=True, kohya_prefix="lora_transformer"),
    FamilySpec("flux", "flux", DatasetLayout.METADATA, Conditioning.TEXT, "models.families.flux:FluxFamily",
               "FluxPipeline", "text-to-image Flux.1 dev/schnell MMDiT (flow matching, guidance-distilled)",
               flow_matching=True, kohya_prefix="lora_transformer"),
)}

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
API_FAMILY_NAMES: tuple[str, ...] = tuple(spec.api_name for spec in FAMILIES.values())


def family(name: str) -> FamilySpec:
    """The family called ``name`` (config name); ``ValueError`` naming the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"family: unknown model family {name!r} (known: {', '.join(FAMILY_NAMES)})") from None


def family_of_api_name(api_name: str) -> FamilySpec:
    """The family registered through the API as ``api_name`` (e.g. ``sd-controlnet``)."""
    for spec in FAMILIES.values():
        if spec.api_name == api_name:
            return spec
    raise ValueError(f"family: unknown model family {api_name!r} (known: {', '.join(API_FAMILY_NAMES)})")


def family_of_pipeline(pipeline: str) -> FamilySpec | None:
    """The family whose checkpoints are saved as the diffusers pipeline class ``pipeline``."""
    return next((spec for spec in FAMILIES.values() if spec.pipeline == pipeline), None)
