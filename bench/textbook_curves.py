"""The textbook strategies' validation-loss curves on a bench case: where short runs mislead.

Each textbook strategy (full fine-tuning at 1e-3, partial at 1e-4, feature extraction at 1e-3,
BatchNorm frozen, thaw's surgery) trains alone for ``--epochs`` on one case and seed of
``bench/cases.py``. Printed per strategy: the validation loss at the first epochs (the screen's
rungs), the best within a trial's length (``train.epochs``) and the best within ``--epochs``.
A strategy behind at the first epochs and ahead at a trial's length is what the screen's rate
guard (``rate_guard: on``) is for::

    nice -n 10 python bench/textbook_curves.py --case b --seed 0
"""

from __future__ import annotations

import argparse

import cases as suite
from search_vs_peers import best_within, load_case, textbook_curves

#: The first epochs printed (the screen's rungs lie among them).
FIRST = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="b", help="a case key of bench/cases.py (default b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=75, help="each strategy's fit (default 75)")
    args = parser.parse_args(argv)

    spec = suite.CASES_BY_KEY[args.case]
    case = load_case(spec, args.seed, spec.budget, None)
    trial_epochs = case.config.train.epochs
    print(f"{spec.name}, seed {args.seed}: val loss per strategy, BatchNorm frozen")
    print(
        f"{'strategy':<22} {'epochs 1-' + str(FIRST):<36} "
        f"{'best@' + str(trial_epochs):>9} {'best@' + str(args.epochs):>9}"
    )
    for strategy, losses in textbook_curves(case, args.epochs).items():
        first = " ".join(f"{v:.3f}" for v in losses[:FIRST])
        print(
            f"{strategy:<22} {first:<36} {best_within(losses, trial_epochs):>9.4f} "
            f"{best_within(losses, args.epochs):>9.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
