"""``matryoshka fit-projection``: fit a rotation or an adapter that makes prefixes carry more.

Embed a corpus (a folder of text files or a JSONL file) or read its vectors, fit a PCA or learned
rotation, or an adapter, on the documents only, and save it (.npz). Use it with
matryoshka_retrieval.projection.ProjectedEncoder.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from . import _options as opt

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


def register(commands: Any) -> None:
    parser = opt.add_command(commands, "fit-projection", run, __doc__)
    parser.add_argument("input", nargs="?", help="a folder or JSONL file of documents")
    parser.add_argument("--vectors", default=None, help="a .npy file of document vectors instead")
    parser.add_argument("--out", required=True, help="where to write the projection (.npz)")
    parser.add_argument(
        "--method",
        choices=["pca", "learned", "adapter"],
        default="pca",
        help="pca or learned (rotations: full-dim scores unchanged), or adapter (a rotation and "
        "a residual MLP, scaled to keep >= 0.99 of the fitted vectors' full-dim top-10)",
    )
    parser.add_argument(
        "--epochs", type=opt.int_arg(1), default=20, help="training passes (learned)"
    )
    parser.add_argument(
        "--seed", type=opt.int_arg(0), default=0, help="random seed (learned, adapter)"
    )
    parser.add_argument(
        "--pairs",
        default=None,
        help='JSONL of {"query", "positive"} pairs, or a BEIR folder; embedded with --model, '
        "which must be the model of the documents",
    )
    parser.add_argument(
        "--corpus-pairs",
        action="store_true",
        help="make pairs from the documents: each one's first sentence and the rest of it",
    )
    opt.add_model(parser)
    opt.add_max_seq_length(parser)
    opt.add_fields(parser)
    opt.add_quiet(parser)


def run(args: argparse.Namespace) -> int:
    from ..projection import fit_projection

    if not args.vectors and not args.input:
        raise ValueError("give a folder or JSONL file of documents, or --vectors FILE.npy")
    texts: list[str] = []
    if not args.vectors:
        _, texts, _ = opt.read_texts(args.input, args.id_field, args.text_field)
    pair_texts = _pair_texts(args, texts)  # read before anything is embedded
    encoder = opt.encoder(args) if texts or pair_texts else None
    if encoder is not None and texts:
        vectors = encoder.encode_documents(texts)
        source = f"{len(texts)} documents of {args.input} embedded with {encoder.model_name}"
    else:
        vectors, source = opt.read_npy(args.vectors, "--vectors"), args.vectors
    pairs: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    if encoder is not None and pair_texts:
        pairs = (
            encoder.encode_queries([q for q, _ in pair_texts]),
            encoder.encode_documents([d for _, d in pair_texts]),
        )
        source += f", with {len(pair_texts)} query/document pairs"
    start = time.perf_counter()
    projection = fit_projection(
        vectors,
        method=args.method,
        epochs=args.epochs,
        pairs=pairs,
        seed=args.seed,
        show_progress_bar=not args.quiet,
    )
    projection.save(args.out)
    print(
        f"fitted the {args.method} projection of {projection.dim} dims on {source} in "
        f"{time.perf_counter() - start:.1f}s -> {args.out} (fingerprint "
        f"{projection.fingerprint[:12]})"
    )
    return 0


def _pair_texts(args: argparse.Namespace, texts: list[str]) -> list[tuple[str, str]]:
    """The (query, document) pairs of ``--pairs`` or ``--corpus-pairs``, if any."""
    if not (args.pairs or args.corpus_pairs):
        return []
    if args.method == "pca":
        raise ValueError("--pairs and --corpus-pairs need --method learned or adapter")
    if args.corpus_pairs and not texts:
        raise ValueError("--corpus-pairs makes pairs from the documents' text: give the documents")
    from ..datasets import corpus_pairs
    from ..train import load_pairs

    pair_texts = load_pairs(args.pairs) if args.pairs else corpus_pairs(texts)
    if len(pair_texts) < 2:
        raise ValueError(f"found {len(pair_texts)} pairs; the pair loss needs at least 2")
    return pair_texts
