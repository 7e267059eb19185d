"""NovelAI model ids as the request tests expect them."""

from __future__ import annotations

CURRENT_MODELS = (
    "nai-diffusion-4-5-full",
    "nai-diffusion-4-5-curated",
    "nai-diffusion-4-full",
    "nai-diffusion-4-curated-preview",
    "nai-diffusion-5-full",
    "nai-diffusion-5-curated",
    "nai-diffusion-3",
    "nai-diffusion-furry-3",
)
"""The models the web offers today, newest family first."""

INPAINTING_IDS = [
    ("nai-diffusion-4-5-full", "nai-diffusion-4-5-full-inpainting"),
    ("nai-diffusion-4-5-curated", "nai-diffusion-4-5-curated-inpainting"),
    ("nai-diffusion-4-full", "nai-diffusion-4-full-inpainting"),
    ("nai-diffusion-4-curated-preview", "nai-diffusion-4-curated-inpainting"),
    ("nai-diffusion-5-full", "nai-diffusion-5-full-inpainting"),
    ("nai-diffusion-5-curated", "nai-diffusion-4-5-curated-inpainting"),
    ("nai-diffusion-3", "nai-diffusion-3-inpainting"),
    ("nai-diffusion-furry-3", "nai-diffusion-furry-3-inpainting"),
    ("nai-diffusion", "nai-diffusion-inpainting"),
    ("safe-diffusion", "safe-diffusion-inpainting"),
    ("nai-diffusion-furry", "furry-diffusion-inpainting"),
]
"""Each generation model and the id an `infill` request names for it, the exceptions included (V4 curated drops
"-preview"; V5 curated borrows V4.5 curated's; the V1 furry model's is not named after it)."""
