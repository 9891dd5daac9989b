"""Measure how far a fit on a Dask cluster lands from the same fit on this machine.

The models a cluster spreads over its workers (daemon.training.spread: XGBoost and LightGBM on
the rows partitioned across the workers, the forests by trees) are fitted once on the cluster
(`Cluster.fit_all`, as a retrain does) and once here (`fit_model`), with the same rows, weights
and seed. Printed per model: its fit seconds both ways, the largest and the mean difference of
the validation rows' probabilities, the share of rows whose 0/1 call differs, and the largest
difference of balanced accuracy, per regime (groups of 30 rows or more) and overall.

The rows: the bundled S&P 500 from `--start` through the batch feature code into a store, the
first 70% of the labelled rows to fit, the rest to validate, the default regime loss weights.
Labels: the default 5-day direction (close to a coin toss), or, with `--learnable`, the sign of
a feature (the fixture the tests train on). Models at the defaults, or with `--small` at the
test sizes (tests/factories.py SMALL_MODELS).

Without `--dask`, a local cluster of two one-thread workers is started for the run
(tests/dask_cluster.py) and stopped by pid at the end.

Run: .venv/bin/python benchmarks/cluster_tolerance.py [--start 2008-01-01] [--learnable]
     [--small] [--dask tcp://host:port]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.config import Config
from daemon.config.loader import StoreConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.pipeline.features.defs import FEATURE_VERSION
from daemon.registry.ensemble import positive_proba
from daemon.store.sqlite import Store
from daemon.training.cluster import open_cluster
from daemon.training.fitting import fit_model
from daemon.training.sampling import row_weights
from daemon.training.scoring import score
from daemon.training.spread import SPREAD
from tests.factories import SMALL_MODELS, label_by_feature, store_history

NAMES = tuple(m for m in ("xgboost", "lightgbm", "random_forest", "extra_trees") if m in SPREAD)


@contextlib.contextmanager
def _scheduler(address: str) -> Iterator[str]:
    if address:
        yield address
        return
    from tests.dask_cluster import dask_cluster

    with dask_cluster(workers=2) as cluster:
        yield cluster.address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2008-01-01")
    parser.add_argument("--learnable", action="store_true")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--dask", default="")
    args = parser.parse_args()

    sp500 = read_bars_csv(bundled_path("sp500"))
    vix = read_vix_csv(bundled_path("vix"))
    config = Config().replace(store=StoreConfig(path=str(Path(tempfile.mkdtemp()) / "r.db")))
    store_history(config, {"^GSPC": sp500[sp500.index >= args.start]}, vix)
    if args.learnable:
        label_by_feature(config, "macd_hist")
    with Store.open(config.store) as store:
        meta, X = store.read_samples(
            source=None, labelled=True, feature_version=FEATURE_VERSION, target=config.label.key
        )
    y = meta["label"].to_numpy(dtype=np.int8)
    regimes = meta["regime"].to_numpy().astype(str)
    cut = int(0.7 * len(y))
    w = row_weights(regimes[:cut], config.weights.regime.as_dict())
    if args.small:
        config = config.replace(models=SMALL_MODELS)
    labels = "feature sign" if args.learnable else "5-day direction"
    print(f"{len(y)} rows ({cut} to fit), labels: {labels}, models: ", end="")
    print("small" if args.small else "defaults")

    with _scheduler(args.dask) as address:
        training = dataclasses.replace(config.training, dask_scheduler=address)
        on_cluster = config.replace(training=training)
        with open_cluster(on_cluster) as cluster:
            assert cluster is not None
            assert cluster.client is not None
            remote, seconds, _ = cluster.fit_all(
                on_cluster, X[:cut], y[:cut], w, lambda *_: None,
                stage="fit", names=NAMES, optional=(),
            )  # fmt: skip
    print(
        f"{'model':14} {'here s':>7} {'cluster s':>9} {'max|dP|':>8} {'mean|dP|':>8} "
        f"{'calls differ':>12} {'max|dBA|':>8}"
    )
    for name in NAMES:
        started = time.perf_counter()
        local = fit_model(
            name, X[:cut], y[:cut], w, config.models, n_jobs=1, seed=config.training.seed
        )
        took = time.perf_counter() - started
        p_here, p_there = positive_proba(local, X[cut:]), positive_proba(remote[name], X[cut:])
        here = score(y[cut:], p_here >= 0.5, regimes[cut:], 30)
        there = score(y[cut:], p_there >= 0.5, regimes[cut:], 30)
        pairs = [(here.overall, there.overall)]
        pairs += [(here.per_regime[r], there.per_regime[r]) for r in here.per_regime]
        gap = max(
            abs(a.balanced_accuracy - b.balanced_accuracy)
            for a, b in pairs
            if a.balanced_accuracy is not None and b.balanced_accuracy is not None
        )
        diff = np.abs(p_here - p_there)
        print(
            f"{name:14} {took:7.2f} {seconds[name]:9.2f} {diff.max():8.4f} {diff.mean():8.4f} "
            f"{np.mean((p_here >= 0.5) != (p_there >= 0.5)):12.4f} {gap:8.4f}"
        )


if __name__ == "__main__":
    main()
