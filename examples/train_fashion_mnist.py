"""Train a small CNN on Fashion-MNIST with the library API (what `fnn train` does, spelled out).

    python examples/train_fashion_mnist.py --epochs 2        # ~2 min on a 2-core CPU, test acc ~0.90
    python examples/train_fashion_mnist.py --quick --out /tmp/example   # 1 epoch on the embedded sample, seconds

Steps: load the data (the embedded sample if the full set is absent), hold out a validation
set, standardize with statistics of the training split only, train with a fused epoch per
compiled call, reduce the learning rate on a validation plateau, evaluate on the test set, and
save the curves and the confusion matrix.
"""

import argparse
from pathlib import Path

import jax

from fnn import data, losses, models, optim
from fnn.train import Checkpoint, LearningRateLog, ReduceLROnPlateau, evaluate, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 epoch on the embedded sample (3000 + 1000 images), whatever data is installed")
    parser.add_argument("--epochs", type=int, default=None, help="default 2, or 1 with --quick")
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 2)

    ds = data.load_sample() if args.quick else data.load_fashion_mnist()
    (x_train, y_train), (x_test, y_test) = ds.train, ds.test
    split_key, fit_key = jax.random.split(jax.random.key(0))
    (x_train, y_train), (x_val, y_val) = data.train_val_split(x_train, y_train, 0.1, key=split_key)
    scaler = data.Standardizer.fit(x_train, per="global")          # training split only
    x_train, x_val, x_test = (scaler.apply(x) for x in (x_train, x_val, x_test))

    model = models.simple_cnn()
    loss = losses.softmax_cross_entropy
    # Clipping and weight decay would go here: optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)).
    optimizer = optim.adam(1e-3)
    callbacks = [ReduceLROnPlateau(0.5, patience=1),       # halve the step after 2 epochs without progress
                 LearningRateLog(1e-3),                    # History.lr: 1e-3 times the plateau scale
                 Checkpoint(args.out, resume=False)]       # args.out/checkpoint.fnn after every epoch
    ts, history = fit(model, loss, optimizer, (x_train, y_train), epochs=epochs, batch_size=128,
                      key=fit_key, val_data=(x_val, y_val), callbacks=callbacks)
    print(history.as_table())

    result = evaluate(model, loss, ts.params, ts.state, x_test, y_test)
    print(f"test accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}")
    history.save_jsonl(args.out / "history.jsonl")
    try:
        from fnn.plot import plot_confusion, plot_history
        plot_history(history, args.out / "curves.png", title="simple_cnn on Fashion-MNIST")
        plot_confusion(result["confusion"], None, args.out / "confusion.png")
        print(f"plots in {args.out}")
    except ImportError as e:  # matplotlib is optional
        print(e)


if __name__ == "__main__":
    main()
