"""Benchmark the eight base models: fit time at the default configuration on 100,000 samples.

The rows are real: the bundled S&P 500 and NASDAQ histories (1999-2018) through the batch
feature code, labelled with the default 5-day target, regimes from the rule-based labeler. They
give about 9,600 labelled rows of 47 features, so:

* time split: the last 20% of the trading days are the holdout; the 5 days before it are purged
  (their labels look into the holdout). The holdout rows are scored as they are, no noise.
* the training part is drawn up to 100,000 rows with the trainer's regime-balanced sampler
  (`daemon.training.sampling.balance`, default target mix and seed: rare regimes oversampled,
  so most rows repeat) and each drawn row gets Gaussian noise of 1% of its feature's standard
  deviation (the 0/1 features are left as they are), so that the repeats are not exact
  duplicates. The weights are the default regime loss weights.

Every model is then fitted with `fit_model` at `Config().models` (the defaults) and
`--n-jobs` threads, and scored on the holdout: accuracy and balanced accuracy of
P(up) >= 0.5. The always-up reference is printed beside them.

Then the SVM approximation against an exact RBF SVM, all fitted on the same `--svm-train` real
training rows (drawn without noise, with their regime weights) and scored on the holdout:
`method = "subsample"` with `max_samples` equal to the rows (an exact `SVC`), the default
`nystroem` pipeline, and that pipeline with liblinear's `LinearSVC` in place of the SGD-trained
`LinearSVM` (the solver it replaces), all Platt-scaled alike.

Run: /tmp/venv/bin/python benchmarks/retrain_models.py [--rows 100000] [--n-jobs 2]
     [--svm-train 5000] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.svm import LinearSVC

from daemon.config import Config
from daemon.config.training import MODEL_NAMES, ModelsConfig, SVMConfig
from daemon.data.history import bundled_path, read_bars_csv, read_vix_csv
from daemon.pipeline.features import FEATURE_NAMES, features_from_labels
from daemon.pipeline.labels import future_labels
from daemon.pipeline.regime import label_history
from daemon.registry.ensemble import positive_proba
from daemon.training.fitting import fit_model
from daemon.training.models import build_model
from daemon.training.sampling import balance, row_weights

HOLDOUT = 0.2
NOISE = 0.01


@dataclasses.dataclass(frozen=True)
class Rows:
    X: np.ndarray
    y: np.ndarray
    regimes: np.ndarray


def real_rows(config: Config) -> tuple[Rows, Rows]:
    """(training part, holdout) of the bundled S&P 500 and NASDAQ rows, split by date."""
    vix = read_vix_csv(bundled_path("vix"))
    frames = []
    for name in ("sp500", "nasdaq"):
        bars = read_bars_csv(bundled_path(name))
        labels = label_history(config.regime, bars["close"], vix)
        features = features_from_labels(bars, labels)
        features["label"] = future_labels(config.label, bars["close"]).reindex(features.index)
        features["regime"] = labels["regime"].reindex(features.index)
        frames.append(features.dropna(subset=["label"]))
    rows = pd.concat(frames).sort_index(kind="stable")
    days = rows.index.unique()
    cut = days[int(len(days) * (1 - HOLDOUT))]
    last_train = days[days.get_loc(cut) - config.label.horizon_bars - 1]

    def part(frame: pd.DataFrame) -> Rows:
        return Rows(
            frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32),
            frame["label"].to_numpy(dtype=np.int8),
            frame["regime"].astype(str).to_numpy(),
        )

    return part(rows[rows.index <= last_train]), part(rows[rows.index >= cut])


def training_rows(train: Rows, config: Config, n: int) -> tuple[Rows, np.ndarray]:
    """`n` rows drawn to the target regime mix, with 1% noise; and their loss weights."""
    mix = balance(list(train.regimes), config.sampling.target_mix.as_dict(), 42, size=n)
    X = train.X[mix.indices].astype(np.float64)
    rng = np.random.default_rng(7)
    binary = np.all((train.X == 0) | (train.X == 1), axis=0)
    scale = np.where(binary, 0.0, NOISE * train.X.std(axis=0, dtype=np.float64))
    X += rng.normal(size=X.shape) * scale
    drawn = Rows(X.astype(np.float32), train.y[mix.indices], train.regimes[mix.indices])
    weights = row_weights(list(drawn.regimes), config.weights.regime.as_dict())
    return drawn, weights


def score(model: Any, rows: Rows) -> tuple[float, float, np.ndarray]:
    """Accuracy, balanced accuracy and predicted labels (P(up) >= 0.5) on `rows`."""
    predicted = (positive_proba(model, rows.X) >= 0.5).astype(np.int8)
    return (
        float(accuracy_score(rows.y, predicted)),
        float(balanced_accuracy_score(rows.y, predicted)),
        predicted,
    )


def timed_fit(
    name: str, rows: Rows, weights: np.ndarray | None, models: ModelsConfig, n_jobs: int
) -> tuple[Any, float]:
    started = time.perf_counter()
    model = fit_model(name, rows.X, rows.y, weights, models, n_jobs=n_jobs, seed=42)
    return model, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--svm-train", type=int, default=5000)
    parser.add_argument("--models", default=",".join(MODEL_NAMES))
    args = parser.parse_args()
    config = Config()
    train, holdout = real_rows(config)
    drawn, weights = training_rows(train, config, args.rows)
    print(
        f"Python {platform.python_version()}, NumPy {np.__version__}, scikit-learn "
        f"{sklearn.__version__}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
        f"real rows: {len(train.y)} training, {len(holdout.y)} holdout; fitted on "
        f"{len(drawn.y)} x {drawn.X.shape[1]}, n_jobs={args.n_jobs}\n"
    )
    up = float(holdout.y.mean())
    print("| model | fit s | holdout accuracy | holdout balanced accuracy |")
    print("|---|---:|---:|---:|")
    print(f"| (always up) | | {up:.3f} | 0.500 |")
    total = 0.0
    for name in args.models.split(","):
        model, seconds = timed_fit(name, drawn, weights, config.models, args.n_jobs)
        total += seconds
        acc, bacc, _ = score(model, holdout)
        print(f"| {name} | {seconds:.1f} | {acc:.3f} | {bacc:.3f} |", flush=True)
    print(f"| **total** | **{total:.1f}** | | |")
    print(f"\nload after: {os.getloadavg()[0]:.2f}\n")

    rng = np.random.default_rng(3)
    pick = np.sort(rng.choice(len(train.y), size=min(args.svm_train, len(train.y)), replace=False))
    small = Rows(train.X[pick], train.y[pick], train.regimes[pick])
    small_w = row_weights(list(small.regimes), config.weights.regime.as_dict())
    exact = dataclasses.replace(
        config.models, svm=SVMConfig(method="subsample", max_samples=len(small.y))
    )
    print(f"SVM on {len(small.y)} real training rows, scored on the {len(holdout.y)} holdout rows")
    print(
        "| SVM | fit s | accuracy | balanced accuracy | same label as exact | same as liblinear |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    results = {}
    for label, models in (
        ("exact RBF SVC (`subsample`)", exact),
        ("Nystroem + liblinear `LinearSVC`", None),
        ("Nystroem + `LinearSVM` (default)", config.models),
    ):
        if models is None:  # the default pipeline with liblinear's solver in place of LinearSVM
            started = time.perf_counter()
            model = build_model("svm", config.models, n_jobs=args.n_jobs, seed=42)
            model.set_params(svm__estimator=LinearSVC(C=config.models.svm.c, dual=False))
            model.fit(small.X, small.y, svm__sample_weight=small_w)
            seconds = time.perf_counter() - started
        else:
            model, seconds = timed_fit("svm", small, small_w, models, args.n_jobs)
        results[label] = (seconds, *score(model, holdout))
    exact_labels = results["exact RBF SVC (`subsample`)"][3]
    liblinear = results["Nystroem + liblinear `LinearSVC`"][3]
    for label, (seconds, acc, bacc, predicted) in results.items():
        print(
            f"| {label} | {seconds:.1f} | {acc:.3f} | {bacc:.3f} | "
            f"{(predicted == exact_labels).mean():.3f} | {(predicted == liblinear).mean():.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
