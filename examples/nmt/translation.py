"""Train the LSTM translation model on gettext pairs, prune 80% class-blind while retraining.

    python examples/nmt/translation.py [--epochs 20] [--retrain 8]

The model, vocabulary and BLEU helpers are ``keras_compress.examples.translation``; the data
are the English-German messages of the gettext catalogs Debian installs. Needs
``pip install "keras-compress[nmt]"``.
"""

from __future__ import annotations

import argparse
import math

import keras

import keras_compress as kc
from keras_compress.examples.translation import (
    arrays,
    bleu,
    masked_loss,
    prepare,
    translate,
    translation_model,
)


def main() -> None:
    """Train on the gettext pairs, prune 80% class-blind while retraining; BLEU and samples."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--retrain", type=int, default=8)
    parser.add_argument("--length", type=int, default=20)
    args = parser.parse_args()
    splits, used = kc.examples.gettext_pairs()
    print(f"catalogs: {used}")
    data = prepare(splits["train"], splits["test"], args.length)
    src, tgt, (x, tin, tout) = data.src, data.tgt, data.train
    valid = arrays(splits["valid"], src, tgt, args.length)
    x_test, test = data.test_source, data.test_pairs
    refs = [t for _, t in test]
    model = translation_model(len(src), len(tgt), embed=96, units=128)
    model.compile(keras.optimizers.Adam(2e-3), masked_loss)
    model.fit([x, tin], tout, batch_size=64, epochs=args.epochs, verbose=2)
    print(f"BLEU {bleu(model, x_test, refs, tgt, args.length):.2f}")
    groups = {layer.name: [f"{layer.name}/.*"] for layer in model.layers if layer.weights}
    # The retraining recipe of docs/translation.md: the sparsity ramped up over the first 70%
    # of the steps with masks recomputed every 10 steps, a constant rate, and of the epochs at
    # full sparsity the one with the lowest validation loss kept.
    pruned = kc.make_prunable(model)
    pruned.compile(keras.optimizers.Adam(1e-3), masked_loss)
    callback = kc.MagnitudePruning(0.8, "polynomial", "class_blind", groups=groups, frequency=10)
    full_sparsity = math.ceil(0.7 * args.retrain)  # the first epoch ending past the ramp
    best = keras.callbacks.EarlyStopping(
        "val_loss", patience=args.retrain, restore_best_weights=True,
        start_from_epoch=full_sparsity - 1,
    )  # fmt: skip
    pruned.fit([x, tin], tout, batch_size=64, epochs=args.retrain, verbose=2,
               validation_data=(list(valid[:2]), valid[2]),
               callbacks=[callback, best])  # fmt: skip
    plain = kc.strip(pruned)
    print(f"80% class-blind: BLEU {bleu(plain, x_test, refs, tgt, args.length):.2f}")
    for row, (source, reference) in zip(translate(plain, x_test[:5], args.length), test[:5]):
        print(f"{source}\n  -> {' '.join(tgt.decode(row))}\n  reference: {reference}")


if __name__ == "__main__":
    main()
