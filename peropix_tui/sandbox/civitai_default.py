"""The dataset a sandbox CivitAI server starts with: one creator with a model for every case the collector
has to get right, plus the odd creators and images real crawls turn up.

`sandbox_artist` owns LoRA, LoCon, DoRA, Checkpoint and TextualInversion models: NSFW and SFW, several
versions, multi-file versions, files that need a key, early access, archived, taken down, minor-flagged
(missing from `nsfw=true` walks), POI (never listed), downloads disabled, no access, a file the resolver
cannot find, a wrong published hash, a non-ASCII name and a name that tries to climb out of its folder.
Image metadata comes from real API bodies: control characters (U+0001, U+000C, U+0010, U+0011, U+0018) in
prompts and resource names, A1111 text mis-parsed into odd keys, `meta: null`, a `Hires prompt` that
CivitAI turned into an object. `0123` is an all-digit username with a leading zero (a JSON number in
`/api/v1/images`), `community_fan` posts images that use `sandbox_artist`'s LoRAs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from peropix_tui.sandbox.civitai_dataset import (
    DEFAULT_FILE_SIZE,
    CivitaiDataset,
    FileAccess,
    ModelMode,
    ModelType,
    NsfwLevel,
)
from peropix_tui.sandbox.civitai_images import ImageFormat

MAIN_CREATOR: Final = "sandbox_artist"
NUMERIC_CREATOR: Final = "0123"
ARCHIVED_CREATOR: Final = "2789799177206"
COMMUNITY_USER: Final = "community_fan"
FAR_FUTURE: Final = 4_102_444_800.0
"""2100-01-01: the early-access deadline of the default dataset (tests wanting one that passes set their own)."""
AUTOV1_SIZE: Final = 3 << 20
"""The checkpoint is at least this big, so one default file has an AutoV1 hash (files under 2 MiB do not)."""

KAWAIMIX_META: Final[dict[str, Any]] = {
    "Size": "512x512",
    "seed": 3217697473,
    "Model": "Ruty mix_KawaiMix-Ultra",
    "steps": 35,
    "hashes": {"model": "c33b07f021"},
    "prompt": "1 girl,masterpiece,hires,full body shot,Չ \x18/\x01TX \\ǥt Ɉ,, Coral_wrap_mini_skirt, "
    "white_block_heels, turquoise_beaded_choker_necklace, gold_hoop_earrings, ,ǥ/  \x11",
    "sampler": "DPM++ SDE Karras",
    "cfgScale": 7,
    "Clip skip": "2",
    "resources": [{"hash": "c33b07f021", "name": "Ruty mix_KawaiMix-Ultra", "type": "model"}],
    "Model hash": "c33b07f021",
    "Hires steps": "10",
    "Hires upscale": "3.5",
    "Hires upscaler": "R-ESRGAN 4x+",
    "negativePrompt": "chillout escynage finger",
    "Wildcard prompt": '"1 girl,masterpiece,hires,full body shot,____Չ \x18/\x01TX \\ǥt Ɉ__,__ǥ/  \x11__"',
    "Denoising strength": "0.5",
}
FORMFEED_META: Final[dict[str, Any]] = {
    "ENSD": "31337",
    "Size": "3840x2560",
    "seed": 570120641,
    "steps": 29,
    "prompt": "(masterpiece),{best illustration},highres,game cg,full body,(look at viewer:1.1)\n"
    "(B is dynamic angle:1.2)B has(Organza lace,) and (a very detailed face:1.2\t\x0cB have(long blue hair)"
    "and(garter_belt)and(high heels)\nsunlight,outdoors,ray tracing,blue rose",
    "sampler": "DPM adaptive",
    "cfgScale": 4,
    "Mask blur": "4",
    "resources": [],
    "Model hash": "8712e20a5d",
    "negativePrompt": "longbody,lowres, bad anatomy, bad hands, missing fingers, worst quality, low quality \x0c"
    "solo,table lamp,three girls",
    "Denoising strength": "0.4",
}
ODD_KEYS_META: Final[dict[str, Any]] = {
    "ENSD": "31337",
    "Size": "512x640",
    "seed": 3105398483,
    "steps": 20,
    "prompt": "dark hair,yellow colored inner hair,, masterpiece,1girl,cute",
    "sampler": "Euler a",
    "cfgScale": 7,
    "Clip skip": "2",
    "resources": [{"hash": "e666f8ebc42e", "name": "000006", "type": "lora", "weight": None}],
    "Model hash": "e911995387",
    "(low quality": "1.4)",
    "AddNet Enabled": "True",
    "AddNet Model 1": "colored inner hair-000006(e666f8ebc42e)",
    "negativePrompt": "(worst quality:1.4), (low quality:1.4), (normal quality:1.4), lowres",
    '"(worst quality': "1.4)",
    "(normal quality": '1.4), lowres"',
    "AddNet Module 1": "LoRA",
    "AddNet Weight A 1": "1",
    "AddNet Weight B 1": "1",
}
CONTROL_NAME_META: Final[dict[str, Any]] = {
    "Size": "640x960",
    "seed": 2932373228,
    "Model": "0\x10Checkpoint0\x11YesMix_CheckpointYesmix_v16Original",
    "steps": 30,
    "hashes": {"model": "3e9211917c"},
    "prompt": "1girl, police uniform, motion lines, solo, belt, brown eyes, brown hair, arms up, "
    "<lora:colored_inner_hair:1>",
    "Version": "v1.3.0",
    "sampler": "DPM++ 2M Karras",
    "cfgScale": 8,
    "Clip skip": "2",
    "resources": [
        {"name": "colored_inner_hair", "type": "lora", "weight": 1},
        {"hash": "3e9211917c", "name": "0\x10Checkpoint0\x11YesMix_CheckpointYesmix_v16Original", "type": "model"},
    ],
    "Model hash": "3e9211917c",
    "negativePrompt": "(low quality:1.3), (worst quality:1.3),(monochrome:0.8),(deformed:1.3)",
}
FUKAWA_META: Final[dict[str, Any]] = {
    "ENSD": "31337",
    "Size": "832x1216",
    "seed": 1801530556,
    "Model": "ponyDiffusionV6XL_v6StartWithThisOne",
    "steps": 20,
    "hashes": {"model": "67ab2fd8ec", "lora:fukawa_miku_pony_ver1": "407e165725a2"},
    "prompt": "1girl, cowboy shot, (family restaurant:1.2), indoors, smile, open mouth, looking at viewer,\n"
    "fukawa_miku, green eyes, orange hair, long hair, ponytail, green bow, short sleeves, apron, waitress, "
    "pink skirt, <lora:fukawa_miku_pony_ver1:0.7>, score_9, score_8_up, score_7_up, BREAK source_anime, "
    "best quality, masterpiece, solo,",
    "Version": "v1.8.0",
    "sampler": "Euler a",
    "Emphasis": "No norm",
    "cfgScale": 7,
    "clipSkip": 2,
    "resources": [
        {"hash": "407e165725a2", "name": "fukawa_miku_pony_ver1", "type": "lora", "weight": 0.7},
        {"hash": "67ab2fd8ec", "name": "ponyDiffusionV6XL_v6StartWithThisOne", "type": "model"},
    ],
    "Model hash": "67ab2fd8ec",
    "Hires steps": "10",
    "Hires prompt": {"(family restaurant": "1.2)", "fukawa_miku_pony_ver1": "0.7>"},
    "Hires upscale": "1.25",
    "Hires upscaler": "4x-UltraSharp",
    "negativePrompt": "white background, (monochrome:1.2), low quality, bad anatomy, bad proportions, "
    "lowres, bad hands, text, error, missing fingers, worst quality, jpeg artifacts, signature, watermark",
    "Denoising strength": "0.4",
}
NSFW_META: Final[dict[str, Any]] = {
    "prompt": "score_9, score_8_up, 1girl, solo, instabaddie, night city, neon lights, <lora:crazy_girlfriend_pony:1>",
    "negativePrompt": "3d, render, cgi, lowres",
    "cfgScale": 4,
    "steps": 40,
    "sampler": "DDIM",
    "seed": 2047301005,
    "clipSkip": 2,
    "Size": "832x1216",
    "baseModel": "Pony",
    "workflow": "txt2img",
    "civitaiResources": [{"type": "checkpoint", "modelVersionId": 1764228}],
    "extra": {"remixOfId": 75923318},
}


def default_dataset(file_size: int = DEFAULT_FILE_SIZE, *, seed: int = 0) -> CivitaiDataset:
    """The default sandbox dataset, with model files of `file_size` bytes (the checkpoint is bigger)."""
    ds = CivitaiDataset(seed)
    artist = ds.add_creator(MAIN_CREATOR)
    ds.add_creator(COMMUNITY_USER)

    crazy = ds.add_model(artist, "Crazy Girlfriend Mix [XL/PONY]", nsfw=True, tags=["character", "woman", "style"])
    pony = ds.add_version(crazy, "Insta Baddie[PONY]", base_model="Pony", trained_words=["instabaddie"])
    ds.add_file(pony, size=file_size, output_name="crazy_girlfriend_pony")
    ds.add_image(pony, image_format=ImageFormat.PNG)
    ds.add_image(pony, image_format=ImageFormat.JPEG, nsfw_level=NsfwLevel.R, meta=NSFW_META)
    ds.add_image(pony, image_format=ImageFormat.WEBP, nsfw_level=NsfwLevel.X, meta=None)
    xl = ds.add_version(crazy, "Insta Baddie [XL]", base_model="SDXL 1.0", trained_words=["instabaddie"])
    ds.add_file(xl, size=file_size, output_name="crazy_girlfriend_xl", access=FileAccess.KEY)
    ds.add_image(xl, image_format=ImageFormat.PNG)
    ds.add_image(xl, image_format=ImageFormat.JPEG, nsfw_level=NsfwLevel.EXPLICIT)
    ds.add_image(pony, username=COMMUNITY_USER, image_format=ImageFormat.JPEG)
    ds.add_image(xl, username=COMMUNITY_USER, image_format=ImageFormat.PNG, nsfw_level=NsfwLevel.PG13)

    inner = ds.add_model(artist, "concept Colored inner hair", type=ModelType.LOCON, tags=["concept", "hair"])
    inner_v = ds.add_version(inner, "v1", base_model="SD 1.5", trained_words=["colored inner hair"])
    ds.add_file(inner_v, size=file_size, output_name="colored_inner_hair")
    ds.add_image(inner_v, image_format=ImageFormat.JPEG, meta=ODD_KEYS_META)
    ds.add_image(inner_v, image_format=ImageFormat.PNG, meta=CONTROL_NAME_META)
    ds.add_image(inner_v, image_format=ImageFormat.PNG, meta=FORMFEED_META)

    pepper = ds.add_model(artist, "Pepper & Carrot Style", type=ModelType.DORA, tags=["style"])
    pepper_v = ds.add_version(pepper, "v1.0", trained_words=["pepper_carrot_style"])
    ds.add_file(pepper_v, size=file_size, output_name="Pepper__Carrot", fp="bf16", size_label="full")
    ds.add_file(
        pepper_v,
        name="Pepper__Carrot_pruned.safetensors",
        size=max(DEFAULT_FILE_SIZE // 2, file_size // 2),
        output_name="Pepper__Carrot",
        fp="fp16",
        size_label="pruned",
        type="Pruned Model",
    )
    ds.add_image(pepper_v, image_format=ImageFormat.WEBP)
    ds.add_image(pepper_v, image_format=ImageFormat.PNG, nsfw_level=NsfwLevel.PG13)

    kawai = ds.add_model(artist, "KawaiMix-Ultra", type=ModelType.CHECKPOINT, tags=["anime", "base model"])
    kawai_v = ds.add_version(kawai, "v1.0", base_model="SD 1.5")
    ds.add_file(kawai_v, size=max(file_size, AUTOV1_SIZE), access=FileAccess.KEY, output_name="kawaimixUltra_v10")
    ds.add_image(kawai_v, image_format=ImageFormat.PNG, meta=KAWAIMIX_META)
    ds.add_image(kawai_v, image_format=ImageFormat.JPEG, meta=None)

    negative = ds.add_model(artist, "Bad Hands Negative", type=ModelType.TEXTUAL_INVERSION, tags=["negative"])
    negative_v = ds.add_version(negative, "v4", trained_words=["badhandv4"])
    ds.add_file(negative_v, size=file_size, type="Negative")
    ds.add_image(negative_v, image_format=ImageFormat.PNG)

    early = ds.add_model(artist, "Early Bird Outfit", tags=["clothing"])
    early_v1 = ds.add_version(early, "v1.0", trained_words=["earlybird outfit"])
    ds.add_file(early_v1, size=file_size, output_name="early_bird_outfit_v1")
    ds.add_image(early_v1, image_format=ImageFormat.PNG)
    early_v2 = ds.add_version(early, "v2.0", trained_words=["earlybird outfit"], early_access_until=FAR_FUTURE)
    ds.add_file(early_v2, size=file_size, output_name="early_bird_outfit_v2")
    ds.add_image(early_v2, image_format=ImageFormat.JPEG)

    aerith = ds.add_model(artist, "Realistic_Aerith_meenow", mode=ModelMode.ARCHIVED, tags=["final fantasy"])
    aerith_v = ds.add_version(aerith, "v1", base_model="SD 1.5", trained_words=["aerith gainsborough "])
    ds.add_file(aerith_v, size=file_size, name="aerith_v2.safetensors")
    ds.add_image(aerith_v, image_format=ImageFormat.JPEG, meta=None)

    taken = ds.add_model(artist, "Taken Down Style", mode=ModelMode.TAKEN_DOWN)
    taken_v = ds.add_version(taken, "v1")
    ds.add_file(taken_v, size=file_size)
    ds.add_image(taken_v, image_format=ImageFormat.PNG)

    uniform = ds.add_model(artist, "School Uniform Concept", minor=True, tags=["clothing"])
    uniform_v = ds.add_version(uniform, "v1.0", trained_words=["school uniform"])
    ds.add_file(uniform_v, size=file_size)
    ds.add_image(uniform_v, image_format=ImageFormat.PNG)

    person = ds.add_model(artist, "Famous Person", poi=True)
    person_v = ds.add_version(person, "v1.0")
    ds.add_file(person_v, size=file_size)

    climber = ds.add_model(artist, "../../x", tags=["style"])
    climber_v = ds.add_version(climber, "v1.0: CON/aux?", trained_words=["climber"])
    ds.add_file(climber_v, size=file_size)
    ds.add_image(climber_v, image_format=ImageFormat.WEBP)

    for name, access in (
        ("Downloads Off", FileAccess.DISABLED),
        ("Supporters Only", FileAccess.NO_ACCESS),
        ("Lost In Storage", FileAccess.MISSING),
    ):
        model = ds.add_model(artist, name)
        version = ds.add_version(model, "v1.0")
        ds.add_file(version, size=file_size, access=access)
        ds.add_image(version, image_format=ImageFormat.PNG)

    wrong = ds.add_model(artist, "Wrong Hash Style", tags=["style"])
    wrong_v = ds.add_version(wrong, "v1.0", trained_words=["wrong hash style"])
    ds.add_file(wrong_v, size=file_size, api_sha256=hashlib.sha256(b"not the served bytes").hexdigest())
    ds.add_image(wrong_v, image_format=ImageFormat.PNG)

    miku = ds.add_model(artist, "布川 ミク pony版 (アイドル麻雀 ファイナルロマンス2) / Fukawa Miku", tags=["character"])
    miku_v = ds.add_version(
        miku,
        "v1.0",
        base_model="Pony",
        trained_words=["fukawa_miku, green eyes, orange hair, long hair, ponytail, green bow, "],
    )
    ds.add_file(miku_v, size=file_size, name="fukawa_miku_pony_ver1.safetensors", output_name="fukawa_miku_pony_ver1")
    ds.add_image(miku_v, image_format=ImageFormat.PNG, meta=FUKAWA_META, cdn_missing=True)
    ds.add_image(miku_v, image_format=ImageFormat.JPEG, nsfw_level=NsfwLevel.R, meta=FUKAWA_META)

    numeric = ds.add_creator(NUMERIC_CREATOR)
    scottie = ds.add_model(numeric, "scottie style", tags=["style"])
    scottie_v = ds.add_version(scottie, "v7", base_model="SD 1.5", trained_words=["scottie style"])
    ds.add_file(scottie_v, size=file_size, output_name="scottieStyle_v7")
    ds.add_image(scottie_v, image_format=ImageFormat.PNG)
    ds.add_image(scottie_v, image_format=ImageFormat.JPEG, meta=None)

    archived = ds.add_creator(ARCHIVED_CREATOR)
    bie = ds.add_model(archived, "别当", type=ModelType.CHECKPOINT, mode=ModelMode.ARCHIVED)
    bie_v = ds.add_version(bie, "v1.06666", base_model="SD 1.5")
    ds.add_file(bie_v, size=file_size)
    ds.add_image(bie_v, image_format=ImageFormat.JPEG, meta=None)
    return ds
