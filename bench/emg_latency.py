"""Per-window EMG latency: DSP + int8 inference, against the source's sklearn models.

    OMP_NUM_THREADS=1 python -m bench.emg_latency [--data CSV] [--repeats 20]

Everything runs single-threaded in one process, on the same windows, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from bench.stats import print_table, summarize, time_each
from edge.classifier import TfliteClassifier
from edge.emg.classifier import EmgClassifier
from edge.emg.dsp import FeatureSpec, FloatArray
from edge.paths import SHIPPED_EMG_MODEL, shipped_model
from edge.recording import labelled_windows, load_recording


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="../shared/data/emg/emg_train.csv")
    parser.add_argument("--model", default=str(shipped_model(SHIPPED_EMG_MODEL)))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    rec = load_recording(args.data)
    windows, labels, _ = labelled_windows(rec, 100, 100)
    y = np.unique(labels, return_inverse=True)[1]
    rows = []

    clf = EmgClassifier(args.model, num_threads=1)
    rows.append(
        summarize(
            f"emotion-edge int8 ({clf.model.runtime_module.split('.')[0]})",
            time_each(lambda w: clf.predict_proba(w[None]), list(windows), args.repeats),
        )
    )
    feats = clf.spec.transform(windows)
    rows.append(
        summarize(
            "  of which DSP (features + scaling)",
            time_each(lambda w: clf.spec.transform(w[None]), list(windows), args.repeats),
        )
    )
    rows.append(
        summarize(
            "  of which int8 inference",
            time_each(lambda f: clf.model.predict_proba(f[None]), list(feats), args.repeats),
        )
    )

    try:  # the same model through TensorFlow's interpreter, when the train extra is installed
        import sys

        saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.startswith("ai_edge_litert")}
        sys.modules["ai_edge_litert.interpreter"] = None  # type: ignore[assignment]
        sys.modules["tflite_runtime.interpreter"] = None  # type: ignore[assignment]
        tf_model = TfliteClassifier(args.model, num_threads=1)
        del sys.modules["ai_edge_litert.interpreter"], sys.modules["tflite_runtime.interpreter"]
        sys.modules.update(saved)
        rows.append(
            summarize(
                f"same int8 model via {tf_model.runtime_module}",
                time_each(
                    lambda w: tf_model.predict_proba(clf.spec.transform(w[None])), list(windows), args.repeats
                ),
            )
        )
    except ImportError:
        print("(tensorflow not installed: skipping the tf.lite peer)")

    try:
        from sklearn.naive_bayes import GaussianNB
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.svm import LinearSVC
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:
        print("(scikit-learn not installed: skipping the source's baselines)")
    else:
        src = FeatureSpec("raw_gauss", 100, 100, 3, 5.0, (), ()).fitted(windows)
        xs = src.transform(windows)
        for name, est in [
            ("linear SVM", LinearSVC()),
            ("kNN k=5", KNeighborsClassifier(5)),
            ("decision tree", DecisionTreeClassifier(random_state=0)),
            ("Gaussian NB", GaussianNB()),
        ]:
            est.fit(xs, y)

            def predict(w: FloatArray, e: Any = est) -> Any:
                return e.predict(src.transform(w[None]))

            rows.append(
                summarize(
                    f"source {name} (sklearn, gauss+minmax)",
                    time_each(predict, list(windows), args.repeats),
                )
            )
    print(f"windows: {len(windows)} x {args.repeats} passes, 1 thread, window 100 samples x 3 channels")
    print_table(rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
