"""The local hub's dataset viewer on a 1,000,000-row verified-stage dataset: how long the first page of rows takes
once the server is warm (goal: <= 200 ms), as an HTML page and from the dataset-viewer ``/rows`` JSON API, beside
the baseline of reading the whole parquet file with pyarrow (what a viewer without row-group paging would do).

Two file layouts, both pushed to a local hub over HTTP with huggingface_hub:
- ``datasets``: what ``Dataset.to_parquet``/``push_to_hub`` write (row groups of ~100 MB uncompressed);
- ``one row group``: pyarrow's default for 1M rows (a single row group), the worst case for paging.

    flock /tmp/mathgenie-heavy.lock python benchmarks/hub_viewer.py [--rows 1000000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

GOAL_MS = 200.0


def verified_table(n: int):
    """``n`` rows with the verified stage's schema and realistic text lengths (question ~170 characters, four LCE
    blocks, a three-block verification)."""
    import pyarrow as pa

    from mathgenie.schema import VERIFIED_FEATURES

    ids = [f"gsm8k/train/{i % 7473}/r{1 + i % 3}/p{i % 5}/{i % 4}/q0" for i in range(n)]

    def blocks(per_row: int, texts) -> pa.Array:
        types = pa.array(["text", "code", "execution", "text"][:per_row] * n)
        contents = pa.array([t for i in range(n) for t in texts(i)[:per_row]])
        offsets = pa.array(range(0, per_row * n + 1, per_row), pa.int32())
        return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays([types, contents], ["type", "content"]))

    def solution(i: int):
        return (f"Let x be the number of apples Tom has after {i % 97} days; compute it with code.",
                f"x = {i % 13} + {i % 7} * {i % 11}\nprint(x)", str(i % 13 + (i % 7) * (i % 11)),
                f"So Tom has \\boxed{{{i % 13 + (i % 7) * (i % 11)}}} apples.")

    columns = {
        "solution_id": pa.array([f"{q}/s{i % 4}" for i, q in enumerate(ids)]), "question_id": pa.array(ids),
        "seed_id": pa.array([f"gsm8k/train/{i % 7473}" for i in range(n)]), "source": pa.array(["gsm8k"] * n),
        "round": pa.array([1 + i % 3 for i in range(n)], pa.int32()),
        "prompt_id": pa.array([str(i % 5) for i in range(n)]),
        "question": pa.array([f"Tom has {i % 13} apples and buys {i % 7} bags with {i % 11} apples in each bag. How "
                              f"many apples does Tom have now? (variant {i})" for i in range(n)]),
        "blocks": blocks(4, solution), "answer": pa.array([str(i % 13 + (i % 7) * (i % 11)) for i in range(n)]),
        "finish_reason": pa.array(["endofmessage"] * n), "num_code_blocks": pa.array([1] * n, pa.int32()),
        "model": pa.array(["HuggingFaceTB/SmolLM2-135M-Instruct"] * n), "revision": pa.array(["main"] * n),
        "agreement": pa.array([1.0] * n, pa.float32()), "verification": blocks(3, solution),
        "verdict": pa.array(["correct"] * n), "verifier_model": pa.array(["HuggingFaceTB/SmolLM2-135M-Instruct"] * n),
        "verifier_revision": pa.array(["main"] * n),
    }
    return pa.table(columns).cast(VERIFIED_FEATURES.arrow_schema)


def write_layouts(table, out: Path) -> dict[str, Path]:
    import datasets
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    from mathgenie.schema import VERIFIED_FEATURES

    paths = {"datasets": out / "datasets.parquet", "one row group": out / "one-row-group.parquet"}
    ds = datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=VERIFIED_FEATURES))
    ds.to_parquet(str(paths["datasets"]))
    pq.write_table(ds.data.table, paths["one row group"], row_group_size=len(table))
    return paths


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hub-viewer-bench-"))
    from mathgenie.hub.server import serve_in_thread

    server = serve_in_thread(root / "hub", token="bench-token")
    os.environ.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    import httpx
    import pyarrow.parquet as pq
    from huggingface_hub import HfApi

    t0 = time.perf_counter()
    files = write_layouts(verified_table(args.rows), root)
    print(f"built {args.rows:,} rows in {time.perf_counter() - t0:.1f} s: " + ", ".join(
        f"{k} {p.stat().st_size / 2**20:.0f} MiB, {pq.ParquetFile(p).metadata.num_row_groups} row groups"
        for k, p in files.items()), file=sys.stderr)
    api = HfApi(server.url, token=server.token)
    results = []
    with httpx.Client(base_url=server.url, timeout=300) as http:
        for layout, path in files.items():
            repo = f"bench/verified-{layout.replace(' ', '-')}"
            api.create_repo(repo, repo_type="dataset")
            api.upload_file(path_or_fileobj=str(path), path_in_repo="data/train-00000-of-00001.parquet",
                            repo_id=repo, repo_type="dataset")
            page = f"/datasets/{repo}/viewer/default/train"
            q = {"dataset": repo, "config": "default", "split": "train"}
            requests = {
                "first page, HTML (20 rows)": lambda: http.get(page).raise_for_status(),
                "first page, /rows JSON (100 rows)": lambda: http.get("/rows", params={**q, "length": 100})
                .raise_for_status(),
                "last page, HTML (20 rows)": lambda: http.get(page, params={"offset": args.rows - 20})
                .raise_for_status(),
                "last page, /rows JSON (100 rows)": lambda: http.get(
                    "/rows", params={**q, "offset": args.rows - 100, "length": 100}).raise_for_status(),
            }
            cold = timed(requests["first page, HTML (20 rows)"], 1)[0]  # the file's footer is not cached yet
            results.append((layout, "first page, HTML, first request", [cold]))
            for name, fn in requests.items():
                fn()  # warm
                results.append((layout, name, timed(fn, args.repeats)))
            blob = path  # the same bytes the hub stores
            results.append((layout, "baseline: pyarrow reads the whole file",
                            timed(lambda: pq.read_table(blob).slice(0, 100).to_pylist(), max(3, args.repeats // 5))))
    server.stop()
    print(f"\n{args.rows:,} rows, median of {args.repeats} warm requests (goal: first page <= {GOAL_MS:.0f} ms)\n")
    print(f"| layout | request | median ms | max ms | goal |\n|---|---|---:|---:|---|")
    for layout, name, ms in results:
        goal = ("met" if statistics.median(ms) <= GOAL_MS else "MISSED") if "first page" in name and "first request" \
            not in name else ""
        print(f"| {layout} | {name} | {statistics.median(ms):,.1f} | {max(ms):,.1f} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
