"""Train and export the face-emotion CNN on FER2013 (Training to fit, PublicTest to select).

    nohup python -m training.face train --data ../shared/data/fer2013/fer2013.npz \
        --work training/checkpoints/face-next --init-weights training/checkpoints/face/best_weights.npz \
        >> training/checkpoints/face-next.log 2>&1 &
    python -m training.face export --data ../shared/data/fer2013/fer2013.npz \
        --work training/checkpoints/face120 --out models/face [--flip-tta]

The recipe: random 44x44 crops, flips, rotation, zoom, contrast/brightness jitter and random erasing
(``training/face_augment.py``), label smoothing 0.1, SGD Nesterov with a warm-up and one cosine
cycle of ``--epochs``, and an EMA of the weights that is selected on PublicTest (whole face or
centre crop, whichever scores higher) and exported.

Training is resumable: stop it at any time (Ctrl-C, SIGTERM, SIGKILL, a reboot) and run the same
command again. Every epoch ``<work>/state.npz`` saves the weights, the optimiser (its step count is
the schedule's position), the EMA and the dropout RNG; the data order and augmentation are keyed by
(seed, epoch, batch), so a resumed run takes the path an uninterrupted one would (with the same XLA
choice). ``--init-weights`` starts a new run from an earlier model, e.g.
``training/checkpoints/face/best_weights.npz``. It uses a GPU when TensorFlow sees one. Progress
goes to stdout and ``<work>/log.csv``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.atomic import atomic_write

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


def build_model(
    width: int = 32, dropout: float = 0.4, weight_decay: float = 1e-4, input_size: int | None = SIZE
) -> Any:
    """A VGG-style CNN (Khaireddin & Chen 2021 family) slimmed to ~1.2M parameters.

    Input: grayscale faces in [0, 1], 48x48 by default; fully convolutional, so ``input_size=None``
    trains on random crops and the same weights run on the whole face. Four conv blocks
    (2 x conv-BN-ReLU, max-pool), global average pooling, dropout, softmax. Fits the 1.5 MB int8
    budget with room to spare.
    """
    import keras
    from keras import layers, regularizers

    reg = regularizers.l2(weight_decay)
    inputs = keras.Input((input_size, input_size, 1), name="face")
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


def lr_at(step: Any, base_lr: float, warmup_steps: int, total_steps: int) -> Any:
    """Linear warm-up from 10% to ``base_lr``, then one cosine cycle to 0 at ``total_steps``."""
    import tensorflow as tf

    step = tf.cast(step, tf.float32)
    warm = base_lr * (0.1 + 0.9 * step / max(1, warmup_steps))
    progress = tf.clip_by_value((step - warmup_steps) / max(1, total_steps - warmup_steps), 0.0, 1.0)
    cosine = 0.5 * base_lr * (1.0 + tf.cos(np.pi * progress))
    return tf.where(step < warmup_steps, warm, cosine)


def _cosine_schedule(base_lr: float, warmup_steps: int, total_steps: int) -> Any:
    """A Keras schedule driven by the optimiser's own step counter, which the state file keeps, so
    a resumed run continues the same cycle exactly."""
    import keras

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
        def __call__(self, step: Any) -> Any:
            return lr_at(step, base_lr, warmup_steps, total_steps)

        def get_config(self) -> dict[str, Any]:
            return {"base_lr": base_lr, "warmup_steps": warmup_steps, "total_steps": total_steps}

    return WarmupCosine()


# Settings that define the schedule and the recipe: a resume must use the same ones.
RECIPE_KEYS = (
    *("epochs", "batch", "lr", "warmup_epochs", "crop", "erase_p", "ema", "width", "dropout", "seed"),
    "limit",
)


def _save_atomic(path: Path, **arrays: Any) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def _pack(prefix: str, values: Sequence[Any]) -> dict[str, Any]:
    return {f"{prefix}_{i:03d}": np.asarray(v) for i, v in enumerate(values)}


def _unpack(saved: Any, prefix: str) -> list[Any]:
    return [saved[k] for k in sorted(k for k in saved.files if k.startswith(prefix + "_"))]


def load_weights_npz(path: Path | str) -> list[Any]:
    """Model weights from a state/selection file (``w...`` keys) or a plain ``np.savez(*weights)``."""
    with np.load(path) as saved:
        if any(k.startswith("w_") for k in saved.files):
            return _unpack(saved, "w")
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def train(args: argparse.Namespace) -> int:
    import keras
    import tensorflow as tf

    from training.face_augment import AugmentSettings, augment_batch, centre_crop

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    d = load_fer(Path(args.data))
    if args.limit:
        d = {k: v[: args.limit] for k, v in d.items()}
    n_train = len(d["y_train"])
    steps_per_epoch = int(np.ceil(n_train / args.batch))
    total_steps = steps_per_epoch * args.epochs
    aug = AugmentSettings(crop=args.crop, erase_p=args.erase_p)
    print(
        f"train {n_train} val {len(d['y_val'])}; GPUs: {tf.config.list_physical_devices('GPU')}", flush=True
    )

    state_path, best_path = work / "state.npz", work / "best.npz"
    settings = {k: v for k, v in vars(args).items() if not callable(v)}
    model = build_model(args.width, args.dropout, input_size=None)
    optimizer = keras.optimizers.SGD(
        _cosine_schedule(args.lr, steps_per_epoch * args.warmup_epochs, total_steps),
        momentum=0.9,
        nesterov=True,
    )
    optimizer.build(model.trainable_variables)
    ema = [tf.Variable(w, trainable=False) for w in model.get_weights()]
    rng = _rng_variables(model)
    start_epoch = 0
    if state_path.exists():
        saved_settings = json.loads((work / "config.json").read_text())
        for key in RECIPE_KEYS:
            if saved_settings.get(key) != settings.get(key):
                raise SystemExit(
                    f"{work} was started with {key}={saved_settings.get(key)}; resume with the same"
                )
        with np.load(state_path) as saved:
            if "steps_per_epoch" in saved.files and int(saved["steps_per_epoch"]) != steps_per_epoch:
                raise SystemExit(
                    f"{work} was started with {int(saved['steps_per_epoch'])} steps per epoch, this data "
                    f"gives {steps_per_epoch}; resume with the same --data"
                )
            model.set_weights(_unpack(saved, "w"))
            for var, value in zip(optimizer.variables, _unpack(saved, "o"), strict=True):
                var.assign(value)
            for var, value in zip(ema, _unpack(saved, "e"), strict=True):
                var.assign(value)
            # Older checkpoints lack the dropout RNG: they resume with a fresh stream.
            for var, value in zip(rng, _unpack(saved, "r"), strict=False):
                var.assign(value)
            start_epoch = int(saved["epoch"]) + 1
        print(f"resuming at epoch {start_epoch} (step {int(optimizer.iterations.numpy())})", flush=True)
    else:
        if args.init_weights:
            model.set_weights(load_weights_npz(args.init_weights))
            for var, value in zip(ema, model.get_weights(), strict=True):
                var.assign(value)
        (work / "config.json").write_text(json.dumps(settings, indent=2))

    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
    weights = model.weights

    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            loss = loss_fn(y, probs) + tf.add_n(model.losses)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        # EMA of every weight (BN statistics too), with a short warm-up so early epochs are usable.
        it = tf.cast(optimizer.iterations, tf.float32)
        decay = tf.minimum(args.ema, (1.0 + it) / (10.0 + it))
        for e, w in zip(ema, weights, strict=True):
            e.assign(decay * e + (1.0 - decay) * tf.cast(w, e.dtype))
        correct = tf.reduce_sum(tf.cast(tf.argmax(probs, 1) == tf.argmax(y, 1), tf.float32))
        return loss, correct

    def batches(epoch: int) -> Any:
        order = np.random.default_rng([args.seed, epoch]).permutation(n_train)
        for i in range(steps_per_epoch):
            idx = order[i * args.batch : (i + 1) * args.batch]
            yield (
                d["x_train"][idx],
                d["y_train"][idx].astype(np.int32),
                np.array([args.seed, epoch * 100_000 + i]),
            )

    def dataset(epoch: int) -> Any:
        spec = (
            tf.TensorSpec([None, SIZE, SIZE], tf.uint8),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([2], tf.int64),
        )

        def prep(x: Any, y: Any, seed: Any) -> Any:
            x = tf.cast(x, tf.float32)[..., None] / 255.0
            return augment_batch(x, tf.cast(seed, tf.int32), aug), tf.one_hot(y, len(FER_LABELS))

        gen = tf.data.Dataset.from_generator(lambda: batches(epoch), output_signature=spec)
        return gen.map(prep, num_parallel_calls=2).prefetch(4)

    xla = _choose_xla(args.xla, step, dataset(start_epoch), optimizer, model, ema + rng)
    train_step = tf.function(step, jit_compile=xla, reduce_retracing=True)
    x_val = d["x_val"].astype(np.float32)[..., None] / 255.0

    def val_accuracy(crop: bool) -> float:
        x = centre_crop(x_val, args.crop) if crop else x_val
        probs = model.predict(x, batch_size=256, verbose=0)
        return float(np.mean(probs.argmax(axis=1) == d["y_val"]))

    # The best so far is whatever best.npz holds (also when a kill came before state.npz caught up).
    best_acc = -1.0
    if state_path.exists() and best_path.exists():
        with np.load(best_path) as best:
            best_acc = float(best["acc"])
    log = work / "log.csv"
    _start_log(log, start_epoch)
    for epoch in range(start_epoch, args.epochs):
        t0 = time.monotonic()
        loss_sum, correct_sum, seen = 0.0, 0.0, 0
        for x, y in dataset(epoch):
            loss, correct = train_step(x, y)
            loss_sum += float(loss) * len(y)
            correct_sum += float(correct)
            seen += len(y)
        raw = model.get_weights()
        model.set_weights([e.numpy() for e in ema])
        full, cropped = val_accuracy(False), val_accuracy(True)
        ema_weights = model.get_weights()
        model.set_weights(raw)
        acc, mode = max((full, "full"), (cropped, "centre_crop"))
        lr = float(lr_at(optimizer.iterations, args.lr, steps_per_epoch * args.warmup_epochs, total_steps))
        seconds = time.monotonic() - t0
        # Log, best, state: a kill anywhere in between re-runs this epoch, whose log row
        # _start_log then drops, so the log never misses or repeats an epoch.
        with log.open("a") as fh:
            fh.write(
                f"{epoch},{lr:.6f},{loss_sum / seen:.4f},{correct_sum / seen:.4f},{full:.4f},{cropped:.4f},"
                f"{seconds:.0f},{int(xla)}\n"
            )
        if acc > best_acc:
            best_acc = acc
            _save_atomic(best_path, **_pack("w", ema_weights), epoch=epoch, acc=acc, mode=np.array(mode))
        _save_atomic(
            state_path,
            **_pack("w", raw),
            **_pack("o", [v.numpy() for v in optimizer.variables]),
            **_pack("e", ema_weights),
            **_pack("r", [v.numpy() for v in rng]),
            epoch=epoch,
            steps_per_epoch=steps_per_epoch,
        )
        print(
            f"epoch {epoch + 1}/{args.epochs} lr {lr:.5f} loss {loss_sum / seen:.4f}"
            f" acc {correct_sum / seen:.4f}"
            f" | EMA PublicTest full {full:.4f} crop {cropped:.4f} (best {best_acc:.4f}) {seconds:.0f}s",
            flush=True,
        )
    return 0


def _rng_variables(model: Any) -> list[Any]:
    """The model's random state that is not a weight: Keras 3 keeps dropout's SeedGenerator here."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _start_log(log: Path, start_epoch: int) -> None:
    """Open the log for a run starting at ``start_epoch``: rows of epochs it will redo are dropped."""
    header = "epoch,lr,train_loss,train_acc,ema_val_acc_full,ema_val_acc_crop,seconds,xla\n"
    if not log.exists():
        log.write_text(header)
        return
    lines = log.read_text().splitlines(keepends=True)
    kept = [row for row in lines[1:] if row.strip() and int(row.split(",", 1)[0]) < start_epoch]
    if len(kept) != len(lines) - 1:
        log.write_text(header + "".join(kept))


def _choose_xla(choice: str, step: Any, data: Any, optimizer: Any, model: Any, state: list[Any]) -> bool:
    """``auto``: time both compilations on the same real batches and keep the faster one.

    XLA's benefit on a small CPU varies with load and version (578 vs 676 ms on an idle machine,
    963-1330 vs 552-831 ms under load), so it is measured at the start of each run. The trial steps
    are undone afterwards (weights, optimiser, and ``state``: the EMA and the dropout RNG), so the run
    itself is unchanged by the measurement.
    """
    import tensorflow as tf

    if choice != "auto":
        return choice == "on"
    saved_w = model.get_weights()
    saved_o = [v.numpy() for v in optimizer.variables]
    saved_s = [v.numpy() for v in state]
    fns = {flag: tf.function(step, jit_compile=flag, reduce_retracing=True) for flag in (False, True)}
    batches = list(data.take(16))
    times: dict[bool, list[float]] = {False: [], True: []}
    for fn in fns.values():  # compile (not timed)
        fn(*batches[0])
    for i, (x, y) in enumerate(batches[1:]):
        for flag in (False, True) if i % 2 else (True, False):
            t0 = time.perf_counter()
            fns[flag](x, y)[0].numpy()
            times[flag].append(time.perf_counter() - t0)
    model.set_weights(saved_w)
    for var, value in zip(optimizer.variables, saved_o, strict=True):
        var.assign(value)
    for var, value in zip(state, saved_s, strict=True):
        var.assign(value)
    med = {flag: float(np.median(t)) * 1000 for flag, t in times.items()}
    print(
        f"XLA A/B over {2 * len(times[True])} steps: off {med[False]:.0f} ms, on {med[True]:.0f} ms",
        flush=True,
    )
    return med[True] < med[False]


def inference_model(best: Path, settings: dict[str, Any], flip_tta: bool) -> tuple[Any, str]:
    """The selected EMA weights in a fixed 48x48 graph the int8 converter accepts.

    Training selected either the whole face or its centre crop (``mode`` in ``best.npz``); the crop
    and the optional mirror average are layers of the graph, so the runtime's preprocessing (the
    card's 48x48 face) stays the same whatever was chosen.
    """
    import keras
    from keras import layers

    with np.load(best) as saved:
        mode = str(saved["mode"]) if "mode" in saved.files else "full"
    core = build_model(settings.get("width", 32), settings.get("dropout", 0.4), input_size=None)
    core.set_weights(load_weights_npz(best))
    inputs = keras.Input((SIZE, SIZE, 1), name="face")
    x = inputs
    if mode == "centre_crop":
        margin = (SIZE - int(settings["crop"])) // 2
        x = layers.Cropping2D(margin, name="centre_crop")(x)
    if flip_tta:
        mirror = layers.Lambda(lambda t: t[:, :, ::-1, :], name="mirror")(x)
        outputs = layers.Average(name="mirror_mean")([core(x), core(mirror)])
    else:
        outputs = core(x)
    return keras.Model(inputs, outputs, name="fer_cnn_inference"), mode + ("+flip" if flip_tta else "")


def export(args: argparse.Namespace) -> int:
    from edge.metrics import classification_report
    from edge.model_card import DataRef, FacePreprocessing, ModelCard, TensorQuantization, sha256_file
    from training.export import tf_int8_predict, to_int8_tflite, write_c_array, write_model

    if args.limit and args.out is None:
        # A smoke export must not overwrite the shipped model with a card claiming every row.
        raise SystemExit("export --limit needs an explicit --out (the default is the shipped models/face)")
    work, out = Path(args.work), Path(args.out or "models/face")
    out.mkdir(parents=True, exist_ok=True)
    d = load_fer(Path(args.data))
    if args.limit:
        d = {k: v[: args.limit] for k, v in d.items()}
    model, mode = inference_model(
        work / "best.npz", json.loads((work / "config.json").read_text()), args.flip_tta
    )
    with np.load(work / "best.npz") as best:
        selected = int(best["epoch"])
    # Reported on every PublicTest row, as `emotion-edge evaluate face` scores it, so the card and
    # the command agree (selection used the cleaned rows; the one near-blank image counts here).
    with np.load(args.data) as raw:
        public = raw["usage"] == 1
        x_val, y_val = raw["pixels"][public], raw["labels"][public].astype(np.int64)
    if args.limit:
        x_val, y_val = x_val[: args.limit], y_val[: args.limit]
    calib = d["x_train"][np.random.default_rng(0).permutation(len(d["x_train"]))[:1000]]
    tflite = to_int8_tflite(model, calib.astype(np.float32)[..., None] / 255.0, max_calibration=1000)
    float_probs = model.predict(x_val.astype(np.float32)[..., None] / 255.0, batch_size=256, verbose=0)
    int8_out = tf_int8_predict(tflite, x_val.astype(np.float32)[..., None] / 255.0)
    float_rep = classification_report(y_val, float_probs.argmax(axis=1), FER_LABELS)
    int8_rep = classification_report(y_val, int8_out.argmax(axis=1), FER_LABELS)
    log = work / "log.csv"
    # Log rows are written before the checkpoint and redone rows dropped on resume, so they count
    # the finished epochs (state.npz is not committed once a schedule is over).
    epochs = max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0
    settings = json.loads((work / "config.json").read_text())
    command = "python -m training.face " + shlex.join(args.command_line)

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
                "protocol": "FER2013 PublicTest, every row, as `emotion-edge evaluate face` scores it "
                "(the selection split; PrivateTest is held out elsewhere)",
                "float": {k: float_rep[k] for k in ("accuracy", "macro_f1", "n")},
                "int8": {k: int8_rep[k] for k in ("accuracy", "macro_f1", "n")},
                "int8_confusion": int8_rep["confusion"],
                "epochs_trained": epochs,
                "inference": mode,
                "selected_epoch": selected + 1,
            },
            training_data=[DataRef(name=Path(args.data).name, sha256=sha256_file(args.data))],
            training={**settings, "export_command": command},
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
                "Generated by `python -m training.face export`. Selection split: FER2013 PublicTest, "
                f"all {int8_rep['n']} images, as `emotion-edge evaluate face` scores them. "
                "PrivateTest is not in this repository.",
                "",
                "| model | accuracy | macro-F1 | size |",
                "|---|---|---|---|",
                f"| float (Keras) | {_pct(float_rep['accuracy'])} | {_pct(float_rep['macro_f1'])} | |",
                f"| int8 (`face.tflite`) | {_pct(int8_rep['accuracy'])} | {_pct(int8_rep['macro_f1'])} "
                f"| {size_kb:.0f} KiB |",
                "",
                f"Epochs trained: {epochs}; exported: the EMA weights of epoch {selected + 1}, {mode}"
                + (f", continuing from `{settings['init_weights']}`" if settings.get("init_weights") else "")
                + f". Labels: {', '.join(FER_LABELS)}.",
                "",
                "Per-class recall (rows of the confusion matrix, PublicTest):",
                "",
                "| | " + " | ".join(FER_LABELS) + " |",
                "|---" * (len(FER_LABELS) + 1) + "|",
                "| float | " + " | ".join(_pct(r) for r in _recalls(float_rep["confusion"])) + " |",
                "| int8 | " + " | ".join(_pct(r) for r in _recalls(int8_rep["confusion"])) + " |",
                "",
                *(
                    [
                        "Learning curves (from `log.csv`; validation = the EMA weights on PublicTest, "
                        "full 48x48 and centre 44x44 crop):",
                        "",
                        "![learning curves](learning_curves.png)",
                        "",
                    ]
                    if plot_learning_curves(log, out / "learning_curves.png")
                    else []
                ),
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


def _recalls(confusion: Sequence[Sequence[int]]) -> list[float]:
    cm = np.asarray(confusion, dtype=float)
    return (np.diag(cm) / np.maximum(cm.sum(axis=1), 1)).tolist()  # type: ignore[no-any-return]


def plot_learning_curves(log: Path, png: Path) -> bool:
    """Loss, training accuracy and EMA validation accuracy per epoch; False without a log."""
    if not log.exists():
        return False
    rows = np.genfromtxt(log, delimiter=",", names=True)
    if rows.size < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epoch = rows["epoch"] + 1
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    acc.plot(epoch, 100 * rows["train_acc"], label="train (augmented crops)")
    acc.plot(epoch, 100 * rows["ema_val_acc_full"], label="EMA, PublicTest 48x48")
    acc.plot(epoch, 100 * rows["ema_val_acc_crop"], label="EMA, PublicTest centre 44")
    acc.set_xlabel("epoch")
    acc.set_ylabel("accuracy (%)")
    acc.grid(alpha=0.3)
    acc.legend()
    loss.plot(epoch, rows["train_loss"], color="tab:red", label="train loss (label-smoothed)")
    loss.set_xlabel("epoch")
    loss.grid(alpha=0.3)
    lr = loss.twinx()
    lr.plot(epoch, rows["lr"], color="tab:gray", linestyle="--", label="learning rate")
    lr.set_ylabel("learning rate")
    loss.legend(loc="lower left")
    lr.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m training.face",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (resumes exactly from <work>/state.npz)")
    t.add_argument("--data", required=True)
    t.add_argument("--work", default="runs/face")
    t.add_argument("--epochs", type=int, default=120, help="length of the one cosine cycle")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.03, help="peak learning rate (after warm-up)")
    t.add_argument("--warmup-epochs", type=int, default=3)
    t.add_argument("--crop", type=int, default=44, help="random training crop of the 48x48 face")
    t.add_argument("--erase-p", type=float, default=0.5, help="random-erasing probability")
    t.add_argument("--ema", type=float, default=0.999, help="per-step decay of the weight average")
    t.add_argument("--xla", choices=["auto", "on", "off"], default="auto", help="auto: 30-step A/B at start")
    t.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: all cores)")
    t.add_argument("--width", type=int, default=32)
    t.add_argument("--dropout", type=float, default=0.4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke tests)")
    t.add_argument(
        "--init-weights", help="start from these weights (.npz of get_weights(), .keras, .weights.h5)"
    )
    t.set_defaults(func=train)
    e = sub.add_parser("export", help="int8 .tflite + card + REPORT.md from <work>/best.npz")
    e.add_argument("--data", required=True)
    e.add_argument("--work", default="runs/face")
    e.add_argument("--out", help="where face.tflite, its card and REPORT.md go (default: models/face)")
    e.add_argument("--c-array", action="store_true")
    e.add_argument("--flip-tta", action="store_true", help="average each face with its mirror, in-graph")
    e.add_argument("--limit", type=int, default=0, help="use only the first N images (smoke tests)")
    e.set_defaults(func=export)
    args = parser.parse_args(argv)
    if args.command == "export":  # recorded in the card, as it can be re-run
        args.command_line = list(argv) if argv is not None else sys.argv[1:]
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
