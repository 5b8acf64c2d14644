"""Train and export the face-emotion CNN on FER2013 (Training to fit, PublicTest to select).

    python -m training.face train --data ../shared/data/fer2013/fer2013.npz --work runs/face --epochs 60
    python -m training.face export --work runs/face --data ../shared/data/fer2013/fer2013.npz \
        --out models/face

Training is resumable: stop it at any time (Ctrl-C, SIGTERM, a reboot) and run the same command
again; Keras' BackupAndRestore picks up at the last finished epoch. ``--init-weights`` starts a
new run (new learning-rate cycle) from an earlier model, e.g.
``training/checkpoints/face/best_weights.npz``. It uses a GPU when TensorFlow sees one. Progress goes
to ``<work>/log.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SIZE = 48
BLANK_STD = 2.0  # PROVENANCE.md: 13 near-blank images have a pixel std below 2


def load_fer(path: Path) -> dict[str, NDArray[Any]]:
    """Training and PublicTest, cleaned as PROVENANCE.md advises.

    * near-blank images are dropped;
    * exact duplicates inside Training are kept once, and dropped entirely when the copies
      disagree on the label;
    * Training images that also appear in PublicTest are dropped, so selection on PublicTest
      is not flattered by memorised twins.
    """
    data = np.load(path)
    pixels, labels, usage = data["pixels"], data["labels"].astype(np.int64), data["usage"]
    keep = pixels.reshape(len(pixels), -1).std(axis=1) >= BLANK_STD
    digests = np.array([hash(p.tobytes()) for p in pixels])
    test_digests = set(digests[(usage == 1) & keep].tolist())
    train_idx = np.flatnonzero((usage == 0) & keep)
    first: dict[int, np.intp] = {}
    conflicted: set[int] = set()
    selected = []
    for i in train_idx:
        d = int(digests[i])
        if d in test_digests:
            continue
        if d in first:
            if labels[first[d]] != labels[i]:
                conflicted.add(d)
            continue
        first[d] = i
        selected.append(i)
    selected = [i for i in selected if int(digests[i]) not in conflicted]
    test_idx = np.flatnonzero((usage == 1) & keep)
    return {
        "x_train": pixels[selected],
        "y_train": labels[selected],
        "x_val": pixels[test_idx],
        "y_val": labels[test_idx],
    }


def build_model(width: int = 32, dropout: float = 0.4, weight_decay: float = 1e-4) -> Any:
    """A VGG-style CNN (Khaireddin & Chen 2021 family) slimmed to ~1.2M parameters.

    Input: grayscale 48x48 in [0, 1]. Four conv blocks (2 x conv-BN-ReLU, max-pool), global
    average pooling, dropout, softmax. Fits the 1.5 MB int8 budget with room to spare.
    """
    import keras
    from keras import layers, regularizers

    reg = regularizers.l2(weight_decay)
    inputs = keras.Input((SIZE, SIZE, 1), name="face")
    x = inputs
    for i, filters in enumerate([width, width * 2, width * 4, width * 8]):
        for j in range(2):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"b{i}c{j}"
            )(x)
            x = layers.BatchNormalization(name=f"b{i}bn{j}")(x)
            x = layers.ReLU(name=f"b{i}relu{j}")(x)
        x = layers.MaxPooling2D(name=f"b{i}pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="drop")(x)
    outputs = layers.Dense(len(FER_LABELS), activation="softmax", kernel_regularizer=reg, name="probs")(x)
    return keras.Model(inputs, outputs, name="fer_cnn")


def augmenter(seed: int) -> Any:
    """Flips, small rotations, shifts and zooms, plus contrast jitter: the FER2013 standard set."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.05, fill_mode="nearest", seed=seed + 1),
            layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
            layers.RandomZoom((-0.15, 0.15), fill_mode="nearest", seed=seed + 3),
            layers.RandomContrast(0.3, seed=seed + 4),
        ],
        name="augment",
    )


def _datasets(d: dict[str, NDArray[Any]], batch: int, seed: int) -> tuple[Any, Any]:
    import tensorflow as tf

    aug = augmenter(seed)

    def prep(x: Any, y: Any) -> tuple[Any, Any]:
        return tf.cast(x, tf.float32)[..., None] / 255.0, tf.one_hot(y, len(FER_LABELS))

    train = (
        tf.data.Dataset.from_tensor_slices((d["x_train"], d["y_train"]))
        .shuffle(len(d["y_train"]), seed=seed, reshuffle_each_iteration=True)
        .map(prep, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch)
        .map(
            lambda x, y: (tf.clip_by_value(aug(x, training=True), 0.0, 1.0), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices((d["x_val"], d["y_val"]))
        .map(prep)
        .batch(256)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, val


def train(args: argparse.Namespace) -> int:
    import keras
    import tensorflow as tf

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    d = load_fer(Path(args.data))
    if args.limit:
        d = {k: v[: args.limit] for k, v in d.items()}
    print(
        f"train {len(d['y_train'])} val {len(d['y_val'])}; GPUs: {tf.config.list_physical_devices('GPU')}",
        flush=True,
    )
    train_ds, val_ds = _datasets(d, args.batch, args.seed)
    steps = int(np.ceil(len(d["y_train"]) / args.batch))
    schedule = keras.optimizers.schedules.CosineDecay(
        args.lr * 0.1, decay_steps=steps * args.epochs, warmup_target=args.lr, warmup_steps=steps * 2
    )
    model = build_model(args.width, args.dropout)
    if args.init_weights:
        # Continue from an earlier run (e.g. the committed checkpoint) with a fresh schedule.
        if str(args.init_weights).endswith(".npz"):
            with np.load(args.init_weights) as saved:
                model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
        else:
            model.load_weights(args.init_weights)
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        metrics=["accuracy"],
        # Keras' "auto" leaves XLA off on a CPU-only TensorFlow; on for this CNN a training step on
        # 2 CPU cores took 578 ms instead of 676 ms (batch 64).
        jit_compile=True,
    )
    settings = {k: v for k, v in vars(args).items() if not callable(v)}
    (work / "config.json").write_text(json.dumps(settings, indent=2))
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(work / "backup")),
            keras.callbacks.ModelCheckpoint(
                str(work / "best.keras"), monitor="val_accuracy", save_best_only=True
            ),
            keras.callbacks.CSVLogger(str(work / "log.csv"), append=True),
        ],
    )
    return 0


def export(args: argparse.Namespace) -> int:
    import keras

    from edge.metrics import classification_report
    from edge.model_card import DataRef, FacePreprocessing, ModelCard, TensorQuantization, sha256_file
    from training.export import tf_int8_predict, to_int8_tflite, write_c_array, write_model

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = load_fer(Path(args.data))
    if args.limit:
        d = {k: v[: args.limit] for k, v in d.items()}
    model = keras.models.load_model(work / "best.keras")
    x_val, y_val = d["x_val"], d["y_val"]
    calib = d["x_train"][np.random.default_rng(0).permutation(len(d["x_train"]))[:1000]]
    tflite = to_int8_tflite(model, calib.astype(np.float32)[..., None] / 255.0, max_calibration=1000)
    float_probs = model.predict(x_val.astype(np.float32)[..., None] / 255.0, batch_size=256, verbose=0)
    int8_out = tf_int8_predict(tflite, x_val.astype(np.float32)[..., None] / 255.0)
    float_rep = classification_report(y_val, float_probs.argmax(axis=1), FER_LABELS)
    int8_rep = classification_report(y_val, int8_out.argmax(axis=1), FER_LABELS)
    log = work / "log.csv"
    epochs = max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0
    settings = json.loads((work / "config.json").read_text())

    def make_card(model_sha: str, in_q: TensorQuantization, out_q: TensorQuantization) -> ModelCard:
        return ModelCard(
            name="face-emotion",
            modality="face",
            model_file="face.tflite",
            model_sha256=model_sha,
            labels=FER_LABELS,
            preprocessing=FacePreprocessing(kind="face_gray", size=SIZE, pixel_offset=0.0, pixel_scale=255.0),
            input_quantization=in_q,
            output_quantization=out_q,
            metrics={
                "protocol": "FER2013 PublicTest (selection split; PrivateTest is held out elsewhere)",
                "float": {k: float_rep[k] for k in ("accuracy", "macro_f1", "n")},
                "int8": {k: int8_rep[k] for k in ("accuracy", "macro_f1", "n")},
                "int8_confusion": int8_rep["confusion"],
                "epochs_trained": epochs,
            },
            training_data=[DataRef(name=Path(args.data).name, sha256=sha256_file(args.data))],
            training={**settings, "export_command": " ".join(sys.argv)},
        )

    card = write_model(tflite, out / "face.tflite", make_card)
    if args.c_array:
        write_c_array(tflite, out, "face_model_data")
    size_kb = (out / "face.tflite").stat().st_size / 1024
    (out / "REPORT.md").write_text(
        "\n".join(
            [
                "# Face emotion model: evaluation report",
                "",
                "Generated by `python -m training.face export`. Selection split: FER2013 PublicTest "
                f"({int8_rep['n']} images, near-blank dropped). PrivateTest is not in this repository.",
                "",
                "| model | accuracy | macro-F1 | size |",
                "|---|---|---|---|",
                f"| float (Keras) | {_pct(float_rep['accuracy'])} | {_pct(float_rep['macro_f1'])} | |",
                f"| int8 (`face.tflite`) | {_pct(int8_rep['accuracy'])} | {_pct(int8_rep['macro_f1'])} "
                f"| {size_kb:.0f} KiB |",
                "",
                f"Epochs trained: {epochs}"
                + (f", continuing from `{settings['init_weights']}`" if settings.get("init_weights") else "")
                + f". Labels: {', '.join(FER_LABELS)}.",
                "",
                "Confusion (int8; rows true, columns predicted):",
                "",
                "| | " + " | ".join(FER_LABELS) + " |",
                "|---" * (len(FER_LABELS) + 1) + "|",
                *[
                    f"| {lab} | " + " | ".join(str(v) for v in row) + " |"
                    for lab, row in zip(FER_LABELS, int8_rep["confusion"], strict=True)
                ],
                "",
            ]
        )
    )
    print(
        json.dumps(
            {
                "float": float_rep["accuracy"],
                "int8": int8_rep["accuracy"],
                "kib": size_kb,
                "sha256": card.model_sha256,
            }
        )
    )
    return 0


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m training.face",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (resumes automatically from <work>/backup)")
    t.add_argument("--data", required=True)
    t.add_argument("--work", default="runs/face")
    t.add_argument("--epochs", type=int, default=60)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--dropout", type=float, default=0.4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke tests)")
    t.add_argument(
        "--init-weights", help="start from these weights (.npz of get_weights(), .keras, .weights.h5)"
    )
    t.set_defaults(func=train)
    e = sub.add_parser("export", help="int8 .tflite + card + REPORT.md from <work>/best.keras")
    e.add_argument("--data", required=True)
    e.add_argument("--work", default="runs/face")
    e.add_argument("--out", default="models/face")
    e.add_argument("--c-array", action="store_true")
    e.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke tests)")
    e.set_defaults(func=export)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
