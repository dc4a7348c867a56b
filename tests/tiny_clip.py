"""A tiny CLIP model with random weights, saved where sentence-transformers can load it.

No trained CLIP weights can be downloaded on the test machine, so tests build one from a
configuration: transformers' real ``CLIPModel``, ``CLIPTokenizer`` (a byte-level vocabulary with
no merges) and ``CLIPImageProcessor``. Its vectors mean nothing, but every code path is the real
one: tokenizer, image processor, both towers, and sentence-transformers' multimodal ``encode``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROJECTION_DIM = 48
IMAGE_SIZE = 32


def build_tiny_clip(folder: Path, *, seed: int = 0) -> Path:
    """Save a random ``PROJECTION_DIM``-dim CLIP model with its processor to ``folder``."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **tower,
            "num_attention_heads": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": 64,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            **tower,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=PROJECTION_DIM,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE},
            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        ),
        tokenizer=tokenizer,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def noise_images(n: int, *, seed: int = 0, size: tuple[int, int] = (48, 40)) -> list[object]:
    """``n`` distinct RGB ``PIL.Image`` objects of random pixels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(n)]
