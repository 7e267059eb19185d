"""What the history benchmarks fill a store with: tag prompts and thumbnails made from a real NovelAI image.

Imported by the `bench_history*.py` scripts (run as `python bench/bench_x.py`, which puts this folder on the path).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from peropix_tui.core.history import make_thumbnail

NAI_IMAGE = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "fixtures"
    / "images"
    / "nai__enslo_sd-metadata__novelai-full-3char.png"
)
TAG_TEXT = (
    "1girl 1boy 2girls solo looking_at_viewer smile open_mouth blush long_hair short_hair silver_hair black_hair "
    "blonde_hair red_eyes blue_eyes green_eyes hat ribbon hair_ornament dress skirt school_uniform serafuku "
    "thighhighs gloves jacket hoodie outdoors indoors night sky cloud cherry_blossoms city street beach ocean "
    "forest sunset rain snow upper_body full_body cowboy_shot from_above from_side portrait masterpiece "
    "best_quality amazing_quality very_aesthetic absurdres highres detailed_background depth_of_field "
    "cat_ears fox_ears animal_ears tail wings halo holding_umbrella holding_book sitting standing walking "
    "silvery_white silhouette sparkle light_particles lens_flare"
)
TAGS = TAG_TEXT.split()


def thumbnails(rng: random.Random, count: int) -> list[bytes]:
    """Thumbnails of random crops of a real NovelAI image scaled to a generation's size, so they weigh and decode
    like real ones."""
    out = []
    with Image.open(NAI_IMAGE) as source:
        source.load()
        for _ in range(count):
            side = rng.randrange(384, min(1024, source.width, source.height))
            x, y = rng.randrange(0, source.width - side + 1), rng.randrange(0, source.height - side + 1)
            buf = io.BytesIO()
            source.crop((x, y, x + side, y + side)).resize((832, 1216)).save(buf, format="PNG")
            out.append(make_thumbnail(buf.getvalue()))
    return out
