"""Dask scale-out on one machine: 1 worker x 1 thread vs 2 workers x 1 thread (and 1 x 2).

Full-size RNA-FM (random weights), N real Rfam sequences (default 240) in 8 partitions.
Each cluster is started, warmed up (every worker loads the weights once), then timed on the
same data; reports sequences/s and the scaling efficiency of 2 workers over 1.

    python benchmarks/dask_scaling.py      # ~4 min on 2 cores

On a multi-machine cluster the same code runs with ``Client("tcp://scheduler:8786")``; on GPU
workers start them with dask-cuda (``dask cuda worker``) so that each worker owns one GPU.
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import full_size_checkpoint, rfam

from rnafm_sklearn import RnaFmEmbedder
from rnafm_sklearn.dask import embed


def main(argv=None) -> int:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=240)
    args = p.parse_args(argv)
    ckpt = full_size_checkpoint()
    seqs = rfam(args.n).sequence
    emb = RnaFmEmbedder(model=str(ckpt), device="cpu", progress=False)
    rates = {}
    for workers, threads in ((1, 1), (2, 1), (1, 2)):
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=threads,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            warm = dd.from_pandas(seqs.iloc[: 2 * workers], npartitions=workers, sort=False)
            client.compute(embed(warm, emb)).result()  # each worker loads the weights
            data = dd.from_pandas(seqs, npartitions=8, sort=False)
            t = time.perf_counter()
            out = embed(data, emb).compute()
            rates[(workers, threads)] = len(out) / (time.perf_counter() - t)
    base = rates[(1, 1)]
    print(f"# {args.n} Rfam sequences, full-size model, fp32, 8 partitions")
    print("| workers x threads | sequences/s | speed-up vs 1 x 1 | scaling efficiency |")
    print("|---|---|---|---|")
    for (w, t), r in rates.items():
        print(f"| {w} x {t} | {r:.2f} | {r / base:.2f}x | {r / base / (w * t):.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
