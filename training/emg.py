"""Train, evaluate (forward in time) and export the EMG emotion model.

    python -m training.emg train --data ../shared/data/emg/emg_train.csv --out models/emg

Evaluation never splits adjacent windows at random: within each class, the model is
trained on earlier samples and tested on later ones, with a gap in between, and every
normalisation is fitted on the training part only (see ../shared/data/emg/PROVENANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge.emg.dsp import TD_CHANNEL_FEATURES, FeatureSpec, FloatArray
from edge.metrics import classification_report
from edge.model_card import DataRef, EmgPreprocessing, ModelCard, TensorQuantization, sha256_file
from edge.recording import EMG_CHANNELS, Recording, labelled_windows, load_recording

CHANNEL_NAMES = ["corrugator", "zygomaticus", "depressor"]
WINDOW = 100
# Overlapping training windows multiply the few recordings we have; test windows never overlap.
TRAIN_HOP = 20
SOURCE_SIGMA = 5.0
SEEDS = (0, 1, 2)
# Look-back lengths tried for the exported linear model, besides WINDOW itself.
LONG_WINDOWS = (300, 200)  # longest first: ties go to the later, shorter one


@dataclass(frozen=True)
class ForwardProtocol:
    """Blocked forward-in-time CV, defined per class on sample positions inside the class.

    Fold k tests on block k of the last ``n_folds`` blocks of ``test_windows`` windows, and
    trains on everything that ends at least ``gap_windows`` windows before that block.
    """

    window: int = WINDOW
    train_hop: int = TRAIN_HOP
    n_folds: int = 4
    test_windows: int = 5
    gap_windows: int = 2

    def describe(self) -> str:
        return (
            f"blocked forward-in-time CV within each class: {self.n_folds} folds, each testing "
            f"{self.test_windows} non-overlapping {self.window}-sample windows per class and training "
            f"on all earlier samples up to a gap of {self.gap_windows} windows "
            f"(training hop {self.train_hop}); normalisation fitted on the training part only"
        )


@dataclass
class Split:
    x_train: FloatArray
    y_train: NDArray[np.int64]
    x_test: FloatArray
    y_test: NDArray[np.int64]
    t_train: NDArray[np.int64]
    t_test: NDArray[np.int64]


def class_positions(recording: Recording, labels: Sequence[str]) -> dict[str, int]:
    """Number of samples each class has (positions count within the class, in time order)."""
    assert recording.labels is not None
    return {lab: int((recording.labels == lab).sum()) for lab in labels}


def _windows_by_class(
    recording: Recording, labels: Sequence[str], window: int, hop: int
) -> tuple[FloatArray, NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Windows with class index, position of their first sample within the class, and sample start."""
    x, lab, start = labelled_windows(recording, window, hop)
    y = np.array([labels.index(v) for v in lab], dtype=np.int64)
    assert recording.labels is not None
    # Position within the class: how many samples of that class precede the window start.
    pos = np.empty(len(start), dtype=np.int64)
    for k, name in enumerate(labels):
        cls_samples = recording.sample_index[recording.labels == name]
        mask = y == k
        pos[mask] = np.searchsorted(cls_samples, start[mask])
    return x, y, pos, start


def forward_splits(
    recording: Recording, labels: Sequence[str], proto: ForwardProtocol, window: int | None = None
) -> list[Split]:
    """The folds for models that read ``window`` samples (default: the protocol's window).

    Test predictions are made every ``proto.window`` samples, as the daemon does (the card's hop),
    so every model is scored on the same number of predictions per block: each test window ends
    inside the block. A longer window reaches back before the block; training then stops
    ``gap_windows`` earlier than that reach, so no window length sees samples closer to its test
    windows than another.
    """
    w = window or proto.window
    n_per_class = min(class_positions(recording, labels).values())
    xa, ya, pa, sa = _windows_by_class(recording, labels, w, proto.train_hop)
    xt, yt, pt, st = _windows_by_class(recording, labels, w, proto.window)
    block = proto.test_windows * proto.window
    reach = w - proto.window  # samples a test window reads before its block
    splits = []
    for k in range(proto.n_folds):
        test_start = n_per_class - (proto.n_folds - k) * block
        train_end = test_start - reach - proto.gap_windows * proto.window
        tr = pa + w <= train_end
        te = (pt >= test_start - reach) & (pt + w <= test_start + block)
        splits.append(Split(xa[tr], ya[tr], xt[te], yt[te], sa[tr], st[te]))
    return splits


class Classifier(Protocol):
    def fit(self, x: FloatArray, y: NDArray[np.int64]) -> Any: ...
    def predict(self, x: FloatArray) -> NDArray[np.int64]: ...


@dataclass(frozen=True)
class Candidate:
    """A model family evaluated under the protocol."""

    name: str
    features: FeatureSpec
    make: Callable[[int, int], Classifier]  # (seed, n_classes) -> unfitted model
    role: str  # "floor", "source baseline", "candidate"
    exportable: bool = False
    feature_columns: tuple[int, ...] | None = None
    seeded: bool = True
    time_index_only: bool = False
    window: int = WINDOW  # samples each prediction reads; predictions still come every WINDOW samples


def _td_spec(proto: ForwardProtocol, sigma: float = 0.0, window: int | None = None) -> FeatureSpec:
    return FeatureSpec("td", window or proto.window, proto.window, len(EMG_CHANNELS), sigma, (), ())


def _source_spec(proto: ForwardProtocol, sigma: float = SOURCE_SIGMA) -> FeatureSpec:
    return FeatureSpec("raw_gauss", proto.window, proto.window, len(EMG_CHANNELS), sigma, (), ())


class KerasClassifier:
    """Small Keras nets with fixed seeds, so the protocol can compare them to sklearn."""

    def __init__(
        self, build: Callable[[int, int], Any], seed: int, n_classes: int, epochs: int, batch: int = 64
    ):
        self.build, self.seed, self.n_classes, self.epochs, self.batch = build, seed, n_classes, epochs, batch
        self.model: Any = None

    def fit(self, x: FloatArray, y: NDArray[np.int64]) -> KerasClassifier:
        import keras

        keras.utils.set_random_seed(self.seed)
        self.model = self.build(x.shape[1], self.n_classes)
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        self.model.fit(
            x.astype(np.float32), y, epochs=self.epochs, batch_size=self.batch, verbose=0, shuffle=True
        )
        return self

    def predict(self, x: FloatArray) -> NDArray[np.int64]:
        # A direct call, not model.predict(): predict() retraces a tf.function per model.
        probs = self.model(x.astype(np.float32), training=False)
        pred: NDArray[np.int64] = np.asarray(probs).argmax(axis=1)
        return pred

    def keras_model(self) -> Any:
        return self.model


def _source_dense_net(n_in: int, n_classes: int) -> Any:
    """The source notebook's 100-50-25-6 dense network."""
    import keras

    return keras.Sequential(
        [
            keras.Input((n_in,)),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dense(50, activation="relu"),
            keras.layers.Dense(25, activation="relu"),
            keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )


def _cnn_1d(n_in: int, n_classes: int) -> Any:
    import keras

    channels = len(EMG_CHANNELS)
    return keras.Sequential(
        [
            keras.Input((n_in,)),
            keras.layers.Reshape((n_in // channels, channels)),
            keras.layers.Conv1D(16, 7, strides=2, activation="relu"),
            keras.layers.Conv1D(32, 5, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(n_classes, activation="softmax"),
        ]
    )


class SklearnAsDense:
    """A fitted sklearn linear model or one-hidden-layer MLP, re-expressed as a Keras net.

    The daemon only runs ``.tflite``; this keeps classical winners deployable with identical
    float outputs.
    """

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(self, x: FloatArray, y: NDArray[np.int64]) -> SklearnAsDense:
        self.estimator.fit(x, y)
        return self

    def predict(self, x: FloatArray) -> NDArray[np.int64]:
        return np.asarray(self.estimator.predict(x))

    def keras_model(self) -> Any:
        import keras

        est = self.estimator
        n_in = est.n_features_in_
        layers: list[Any] = [keras.Input((n_in,), name="features")]
        weights: list[FloatArray] = []
        if hasattr(est, "coefs_"):  # MLPClassifier
            for w, b in zip(est.coefs_[:-1], est.intercepts_[:-1], strict=True):
                layers.append(
                    keras.layers.Dense(w.shape[1], activation="relu", name=f"hidden{len(weights) // 2}")
                )
                weights += [w, b]
            layers.append(keras.layers.Dense(est.coefs_[-1].shape[1], activation="softmax", name="probs"))
            weights += [est.coefs_[-1], est.intercepts_[-1]]
        else:  # multinomial LogisticRegression
            layers.append(keras.layers.Dense(est.coef_.shape[0], activation="softmax", name="probs"))
            weights += [est.coef_.T, est.intercept_]
        # Fixed names keep the exported flatbuffer byte-identical across runs.
        model = keras.Sequential(layers, name="emg_classifier")
        model.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
        return model


def candidates(proto: ForwardProtocol) -> list[Candidate]:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    td, src = _td_spec(proto), _source_spec(proto)
    mean_cols = tuple(c * len(TD_CHANNEL_FEATURES) for c in range(len(EMG_CHANNELS)))
    return [
        Candidate(
            "window time index, 1-NN",
            td,
            lambda s, n: KNeighborsClassifier(1),
            "floor",
            seeded=False,
            time_index_only=True,
        ),
        Candidate(
            "per-channel mean level + LDA",
            td,
            lambda s, n: LinearDiscriminantAnalysis(),
            "floor",
            feature_columns=mean_cols,
            seeded=False,
        ),
        Candidate("source: linear SVM", src, lambda s, n: LinearSVC(random_state=s), "source baseline"),
        Candidate(
            "source: kNN (k=5)", src, lambda s, n: KNeighborsClassifier(5), "source baseline", seeded=False
        ),
        Candidate(
            "source: decision tree",
            src,
            lambda s, n: DecisionTreeClassifier(random_state=s),
            "source baseline",
        ),
        Candidate("source: Gaussian NB", src, lambda s, n: GaussianNB(), "source baseline", seeded=False),
        Candidate(
            "source: dense 100-50-25-6",
            src,
            lambda s, n: KerasClassifier(_source_dense_net, s, n, epochs=100),
            "source baseline",
        ),
        Candidate(
            "TD features + LDA", td, lambda s, n: LinearDiscriminantAnalysis(), "candidate", seeded=False
        ),
        Candidate("TD features + RBF SVM", td, lambda s, n: SVC(C=1.0), "candidate", seeded=False),
        Candidate(
            "TD features + random forest",
            td,
            lambda s, n: RandomForestClassifier(300, random_state=s, n_jobs=1),
            "candidate",
        ),
        Candidate(
            "1D CNN on raw windows",
            _source_spec(proto, 0.0),
            lambda s, n: KerasClassifier(_cnn_1d, s, n, epochs=60),
            "candidate",
            exportable=True,
        ),
        Candidate(
            "TD features + MLP (64)",
            td,
            lambda s, n: SklearnAsDense(MLPClassifier((64,), alpha=0.1, max_iter=2000, random_state=s)),
            "candidate",
            exportable=True,
        ),
        # Longer windows average over more of the expression, so slow drift of the tone within a
        # session moves one window's features less relative to the class difference. Predictions
        # still come every WINDOW samples; only the look-back grows.
        *(
            Candidate(
                "TD features + softmax regression"
                if w == WINDOW
                else f"TD features ({w} samples) + softmax regression",
                _td_spec(proto, window=w),
                lambda s, n: SklearnAsDense(LogisticRegression(C=1.0, max_iter=5000)),
                "candidate",
                exportable=True,
                seeded=False,
                window=w,
            )
            for w in (*LONG_WINDOWS, WINDOW)
        ),
    ]


@dataclass
class Result:
    candidate: Candidate
    accuracies: list[float] = field(default_factory=list)
    f1s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.candidate.name,
            "role": self.candidate.role,
            "accuracy_mean": float(np.mean(self.accuracies)),
            "accuracy_std": float(np.std(self.accuracies)),
            "macro_f1_mean": float(np.mean(self.f1s)),
            "macro_f1_std": float(np.std(self.f1s)),
            "runs": len(self.accuracies),
        }


def _inputs(cand: Candidate, split: Split) -> tuple[FeatureSpec, FloatArray, FloatArray]:
    if cand.time_index_only:
        return cand.features, split.t_train[:, None].astype(float), split.t_test[:, None].astype(float)
    spec = cand.features.fitted(split.x_train)
    xa, xb = spec.transform(split.x_train), spec.transform(split.x_test)
    if cand.feature_columns is not None:
        xa, xb = xa[:, cand.feature_columns], xb[:, cand.feature_columns]
    return spec, xa, xb


SplitsFor = Callable[[Candidate], list[Split]]


def splits_by_window(recording: Recording, labels: Sequence[str], proto: ForwardProtocol) -> SplitsFor:
    """The folds for a candidate's window length, built once per length."""
    cache: dict[int, list[Split]] = {}

    def splits_for(cand: Candidate) -> list[Split]:
        if cand.window not in cache:
            cache[cand.window] = forward_splits(recording, labels, proto, cand.window)
        return cache[cand.window]

    return splits_for


def evaluate(
    cands: list[Candidate], splits_for: SplitsFor, labels: Sequence[str], log: Callable[[str], None]
) -> list[Result]:
    results = []
    for cand in cands:
        res = Result(cand)
        t0 = time.perf_counter()
        for split in splits_for(cand):
            _, xa, xb = _inputs(cand, split)
            for seed in SEEDS if cand.seeded else SEEDS[:1]:
                model = cand.make(seed, len(labels)).fit(xa, split.y_train)
                pred = model.predict(xb)
                rep = classification_report(split.y_test, pred, labels)
                res.accuracies.append(rep["accuracy"])
                res.f1s.append(rep["macro_f1"])
        s = res.summary()
        log(
            f"{cand.name:40s} acc {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f}  "
            f"F1 {s['macro_f1_mean']:.3f}  ({time.perf_counter() - t0:.1f}s)"
        )
        results.append(res)
    return results


def choose(results: list[Result]) -> Result:
    """Best exportable candidate by mean accuracy, then macro-F1; ties go to the simpler (later) one."""
    exportable = [r for r in results if r.candidate.exportable]
    return max(
        reversed(exportable), key=lambda r: (round(float(np.mean(r.accuracies)), 4), float(np.mean(r.f1s)))
    )


def int8_protocol_check(cand: Candidate, splits_for: SplitsFor, labels: Sequence[str]) -> dict[str, Any]:
    """Float vs int8 accuracy of the chosen model under the same protocol (seed 0)."""
    from training.export import tf_int8_predict, to_int8_tflite

    float_acc, int8_acc, agree = [], [], []
    y_all, p_all = [], []
    for split in splits_for(cand):
        _, xa, xb = _inputs(cand, split)
        model = cand.make(SEEDS[0], len(labels)).fit(xa, split.y_train)
        pf = model.predict(xb)
        tfl = to_int8_tflite(model.keras_model(), xa)  # type: ignore[attr-defined]
        pq = tf_int8_predict(tfl, xb).argmax(axis=1)
        float_acc.append(float((pf == split.y_test).mean()))
        int8_acc.append(float((pq == split.y_test).mean()))
        agree.append(float((pf == pq).mean()))
        y_all.append(split.y_test)
        p_all.append(pq)
    y, p = np.concatenate(y_all), np.concatenate(p_all)
    pooled = classification_report(y, p, labels)
    return {
        "float_accuracy_per_fold": float_acc,
        "int8_accuracy_per_fold": int8_acc,
        "float_accuracy": float(np.mean(float_acc)),
        "int8_accuracy": float(np.mean(int8_acc)),
        "float_int8_agreement": float(np.mean(agree)),
        "int8_pooled": pooled,
    }


def _pct(values: Sequence[float]) -> list[float]:
    return [round(100 * v, 1) for v in values]


def write_report(
    out: Path,
    results: list[Result],
    chosen: Result,
    int8: dict[str, Any],
    proto: ForwardProtocol,
    labels: Sequence[str],
    data_sha: str,
    final_train_acc: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(int8["int8_pooled"]["confusion"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{chosen.candidate.name} (int8), forward CV")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)

    rows = sorted((r.summary() for r in results), key=lambda s: -s["accuracy_mean"])
    lines = [
        "# EMG emotion model: evaluation report",
        "",
        "Generated by `python -m training.emg train`. Do not edit by hand.",
        "",
        f"**Protocol.** {proto.describe()}. Mean ± standard deviation over folds × seeds "
        f"({len(SEEDS)} seeds for seeded models).",
        f"Training data sha256 `{data_sha}`.",
        "",
        "| model | role | accuracy | macro-F1 | runs |",
        "|---|---|---|---|---|",
    ]
    for s in rows:
        mark = " **(shipped)**" if s["model"] == chosen.candidate.name else ""
        lines.append(
            f"| {s['model']}{mark} | {s['role']} "
            f"| {100 * s['accuracy_mean']:.1f} ± {100 * s['accuracy_std']:.1f} "
            f"| {100 * s['macro_f1_mean']:.1f} ± {100 * s['macro_f1_std']:.1f} | {s['runs']} |"
        )
    floors = [s for s in rows if s["role"] != "candidate"]
    best_src = max(
        (s for s in rows if s["role"] == "source baseline"), key=lambda s: s["accuracy_mean"], default=None
    )
    mean_floor = next((s for s in floors if s["model"].startswith("per-channel mean")), None)
    lines += [
        "",
        "## Float vs int8 (shipped architecture, seed 0, same folds)",
        "",
        f"- float: {100 * int8['float_accuracy']:.1f}% (per fold {_pct(int8['float_accuracy_per_fold'])})",
        f"- int8: {100 * int8['int8_accuracy']:.1f}% (per fold {_pct(int8['int8_accuracy_per_fold'])})",
        f"- float/int8 prediction agreement: {100 * int8['float_int8_agreement']:.1f}%",
        f"- int8 pooled macro-F1: {100 * int8['int8_pooled']['macro_f1']:.1f}%",
        "",
        "![confusion matrix](confusion.png)",
        "",
        "## Reading the floors",
        "",
    ]
    if best_src is not None:
        lines.append(
            f"- The best source baseline scores {100 * best_src['accuracy_mean']:.1f}% "
            f"({best_src['model']}); the shipped model {100 * chosen.summary()['accuracy_mean']:.1f}%."
        )
    if mean_floor is not None:
        lines.append(
            f"- Three numbers per window (the mean level of each channel) already reach "
            f"{100 * mean_floor['accuracy_mean']:.1f}%: sensor tone differs per recording segment, and part "
            "of any model's score is that level, not the expression's dynamics."
        )
    lines += [
        "- The window time index alone stays high even forward in time, because each emotion is one "
        "contiguous block of the recording. No split of this single-subject file can remove that "
        "confound; the cross-subject sets in `emg_extra/` are the check for that.",
        f"- The shipped model is refitted on all windows; its accuracy on its own training windows is "
        f"{100 * final_train_acc:.1f}% (not a test score).",
        "",
    ]
    (out / "REPORT.md").write_text("\n".join(lines))


def train(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    recordings = [load_recording(p, source_layout=args.source_layout) for p in args.data]
    if len(recordings) != 1:
        raise SystemExit("train takes exactly one recording file")
    rec = recordings[0]
    assert rec.labels is not None
    labels = list(dict.fromkeys(rec.labels.tolist()))
    proto = ForwardProtocol()
    splits_for = splits_by_window(rec, labels, proto)
    splits = forward_splits(rec, labels, proto)
    log(
        f"{len(labels)} classes {labels}; {len(splits)} folds; "
        f"test windows per fold {[len(s.y_test) for s in splits]}"
    )
    cands = candidates(proto)
    if args.quick:
        cands = [c for c in cands if c.exportable and not isinstance(c.make(0, 2), KerasClassifier)]
    results = evaluate(cands, splits_for, labels, log)
    chosen = choose(results)
    log(f"chosen: {chosen.candidate.name}")
    int8 = int8_protocol_check(chosen.candidate, splits_for, labels)
    log(f"float {int8['float_accuracy']:.3f} int8 {int8['int8_accuracy']:.3f}")

    # Final model: every window of the file, normalisation refitted on all of it.
    from training.export import to_int8_tflite, write_c_array, write_model

    window = chosen.candidate.window
    x_all, lab_all, _ = labelled_windows(rec, window, proto.train_hop)
    y_all = np.array([labels.index(v) for v in lab_all], dtype=np.int64)
    spec = chosen.candidate.features.fitted(x_all)
    feats = spec.transform(x_all)
    final = chosen.candidate.make(SEEDS[0], len(labels)).fit(feats, y_all)
    final_train_acc = float((final.predict(feats) == y_all).mean())
    tflite = to_int8_tflite(final.keras_model(), feats)  # type: ignore[attr-defined]
    data_sha = sha256_file(args.data[0])
    summary = {r.candidate.name: r.summary() for r in results}
    feature_names = (
        [f"{ch}.{f}" for ch in CHANNEL_NAMES for f in TD_CHANNEL_FEATURES]
        if spec.kind == "td"
        else [f"{ch}[{t}]" for t in range(spec.window) for ch in CHANNEL_NAMES]
    )

    def make_card(model_sha: str, in_q: TensorQuantization, out_q: TensorQuantization) -> ModelCard:
        return ModelCard(
            name="emg-emotion",
            modality="emg",
            model_file=args.model_name + ".tflite",
            model_sha256=model_sha,
            labels=labels,
            channels=CHANNEL_NAMES,
            window=window,
            hop=proto.window,
            sample_rate_hz=None,
            preprocessing=EmgPreprocessing(
                kind=spec.kind,
                smoothing_sigma=spec.smoothing_sigma,
                zc_threshold=spec.zc_threshold,
                feature_names=feature_names,
                offset=list(spec.offset),
                scale=list(spec.scale),
            ),
            input_quantization=in_q,
            output_quantization=out_q,
            metrics={
                "protocol": proto.describe(),
                "architecture": chosen.candidate.name,
                "forward_cv": chosen.summary(),
                "float_vs_int8": {k: v for k, v in int8.items() if k != "int8_pooled"},
                "int8_confusion": int8["int8_pooled"]["confusion"],
                "all_models": summary,
            },
            training_data=[DataRef(name=Path(args.data[0]).name, sha256=data_sha)],
            training={"seed": SEEDS[0], "train_hop": proto.train_hop, "command": " ".join(sys.argv)},
        )

    model_path = out / f"{args.model_name}.tflite"
    write_model(tflite, model_path, make_card)
    if args.c_array:
        write_c_array(tflite, out, f"{args.model_name}_model_data")
    write_report(out, results, chosen, int8, proto, labels, data_sha, final_train_acc)
    (out / "results.json").write_text(
        json.dumps({"results": list(summary.values()), "int8": int8}, indent=2) + "\n"
    )
    log(f"wrote {model_path} ({model_path.stat().st_size} bytes), card, REPORT.md")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.emg",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="evaluate every model forward in time, then export the best")
    p.add_argument("--data", nargs="+", required=True, help="recording CSV (sample,EMG1,EMG2,EMG3,label)")
    p.add_argument("--out", default="models/emg", help="output folder")
    p.add_argument("--model-name", default="emg", help="file stem of the exported model")
    p.add_argument(
        "--source-layout",
        action="store_true",
        help="read the source's unlabelled EMG1,EMG2,EMG3 file (6 x 5000 rows)",
    )
    p.add_argument("--c-array", action="store_true", help="also write a C array for TFLite Micro")
    p.add_argument("--quick", action="store_true", help="only the fast exportable candidates (for tests)")
    args = parser.parse_args(argv)
    return train(args)


if __name__ == "__main__":
    raise SystemExit(main())
