"""Search images by text and by image through one coarse-to-fine index.

Run: python examples/image_search.py [MODEL]

MODEL is a CLIP-style sentence-transformers model (default
``sentence-transformers/clip-ViT-B-32``; ``jinaai/jina-clip-v2`` is Matryoshka-trained). When it
cannot be loaded (offline, not in the cache), the script builds a tiny CLIP model with RANDOM
weights so that it still runs end to end: the code path is the real one, but its rankings mean
nothing. Quality figures need a trained model.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from matryoshka_retrieval import MatryoshkaIndex, SentenceTransformerEncoder

logging.getLogger("sentence_transformers").setLevel(logging.ERROR)

SHAPES = {
    "red-circle": ("red", "ellipse"),
    "blue-square": ("blue", "rectangle"),
    "green-circle": ("green", "ellipse"),
    "yellow-square": ("yellow", "rectangle"),
}


def draw_images(folder: Path) -> list[Path]:
    """A few small pictures: coloured shapes on white."""
    paths = []
    for name, (colour, shape) in SHAPES.items():
        image = Image.new("RGB", (96, 96), "white")
        getattr(ImageDraw.Draw(image), shape)((16, 16, 80, 80), fill=colour)
        path = folder / f"{name}.png"
        image.save(path)
        paths.append(path)
    return paths


def random_tiny_clip(folder: Path) -> Path:
    """An untrained 48-dim CLIP model (random weights), saved for sentence-transformers."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[char + suffix] = len(vocab)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    text = {**tower, "num_attention_heads": 2, "vocab_size": len(vocab)}
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=64)
    vision = {**tower, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    torch.manual_seed(0)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=48)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def load_encoder(name: str, scratch: Path) -> SentenceTransformerEncoder:
    try:
        return SentenceTransformerEncoder(name, device="cpu")
    except OSError:
        print(f"{name} is not available offline: using a tiny CLIP with RANDOM weights.")
        print("The code path is real; the rankings below mean nothing.\n")
        return SentenceTransformerEncoder(random_tiny_clip(scratch / "clip"), device="cpu")


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "sentence-transformers/clip-ViT-B-32"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        encoder = load_encoder(name, folder)
        coarse = max(8, encoder.full_dim // 8)
        index = MatryoshkaIndex(encoder, coarse_dim=coarse, rescore_multiplier=2)
        paths = draw_images(folder)
        index.add_images(
            paths, ids=list(SHAPES), metadatas=[{"colour": c} for c, _ in SHAPES.values()]
        )
        print(f"{len(index)} images, {encoder.full_dim} dims stored, coarse stage on {coarse}")

        for query in ("a red circle", "a blue square"):
            hits = index.search(query, k=2)
            print(f"text  {query!r:>18}: {[(h.id, round(h.score, 3)) for h in hits]}")
        hits = index.search(paths[1], k=2)  # a pathlib.Path is an image query
        print(f"image {paths[1].name!r:>18}: {[(h.id, round(h.score, 3)) for h in hits]}")
        hits = index.search(paths[0], k=2, filter={"colour": {"$ne": "red"}})
        print(f"image {paths[0].name!r:>18}, not red: {[h.id for h in hits]}")


if __name__ == "__main__":
    main()
