"""How often thaw's diagnosis names the label of a real labelled run, three ways.

Reads the labelled runs written by ``bench/make_labelled_runs.py`` (``bench/labelled_runs.json``:
real Keras fits with labels guaranteed by construction), stores each model family's runs in a
real SQLite Optuna study (params, history, probes, as ``thaw run`` stores them) and scores the
primary verdict (the first one):

- ``alone``: each run diagnosed on its own (no peers), as ``thaw diagnose --history`` would;
- ``study``: all runs of a family in one study (``diagnose_study``);
- ``as stored``: each run diagnosed when it finished, against the runs finished before it (what
  the publisher stored in its ``verdicts`` attr).

Prints a confusion table per way (rows: label, columns: primary verdict), the share correct and
the number of pathological runs called healthy. ``--no-probes`` drops the end-of-trial probes.

Then the public set (``bench/public_runs.json``): real training runs copied epoch by epoch from
public sources (book notebooks, keras.io examples, GitHub threads), each labelled with what its
source established, a confidence and an ``ambiguous`` flag, and split into a ``dev`` and a
``held_out`` half by the URL. Each run is a history alone, diagnosed as ``thaw diagnose --history``
would (``diagnose_history`` on its history, the params its source states and its number of
classes). Printed per half and for all runs: accuracy on the high-confidence, non-ambiguous labels
and overall, the pathological runs called healthy, a confusion table and the misses.

    python bench/diagnosis_accuracy.py [bench/labelled_runs.json] [--no-probes]
        [--public bench/public_runs.json | --no-public]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from thaw.reports import VERDICTS
from thaw.reports.diagnosis import (
    diagnose_history,
    diagnose_study,
    diagnose_trial,
    trial_verdicts,
)
from thaw.reports.diagnosis._features import TrialCurves

LABELS = (
    "healthy",
    "overfitting",
    "lr_too_high",
    "too_little_finetuning",
    "underfit_bn_frozen_shift",
    "batchnorm_mismatch",
)


def _distributions(num_layers: int) -> dict[str, Any]:
    return {
        "unfrozen_layers": IntDistribution(0, num_layers),
        "learning_rate": FloatDistribution(1e-7, 1.0, log=True),
        "dropout": FloatDistribution(0.0, 0.9),
        "weight_decay": FloatDistribution(1e-7, 0.1, log=True),
        "batchnorm": CategoricalDistribution(["frozen", "adapt", "train"]),
    }


def _study(storage: str, family: str, runs: list[dict[str, Any]], probes: bool) -> optuna.Study:
    study = optuna.create_study(storage=storage, study_name=f"labelled-{family}")
    first = runs[0]
    study.set_user_attr("thaw:objective_metric", "val_loss")
    study.set_user_attr("thaw:num_layers", first["num_layers"])
    study.set_user_attr("thaw:num_classes", first["num_classes"])
    dists = _distributions(first["num_layers"])
    for run in sorted(runs, key=lambda r: r["order"]):
        val = [v for v in run["history"].get("val_loss", []) if v is not None]
        state = optuna.trial.TrialState[run["state"]]
        attrs: dict[str, Any] = {"history": run["history"], "label": run["label"]}
        if probes and run.get("probes"):
            attrs["probes"] = run["probes"]
        if run.get("prune_reason"):
            attrs["prune_reason"] = run["prune_reason"]
        study.add_trial(
            optuna.trial.create_trial(
                params=run["params"],
                distributions={k: dists[k] for k in run["params"]},
                value=min(val) if state == optuna.trial.TrialState.COMPLETE and val else None,
                state=state,
                user_attrs=attrs,
            )
        )
    return study


def _primary(names: list[str]) -> str:
    return names[0] if names else "none"


def score(path: Path, probes: bool = True) -> dict[str, dict[str, str]]:
    """Primary verdict per run id, per way."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    runs = payload["runs"]
    families = sorted({r["family"] for r in runs})
    out: dict[str, dict[str, str]] = {"alone": {}, "study": {}, "as stored": {}}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/labelled.db"
        for family in families:
            mine = sorted((r for r in runs if r["family"] == family), key=lambda r: r["order"])
            study = _study(storage, family, mine, probes)
            trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
            by_number = {t.number: r["id"] for t, r in zip(trials, mine, strict=True)}
            diagnosis = diagnose_study(study)
            for td in diagnosis.trials:
                out["study"][by_number[td.number]] = _primary([v.verdict for v in td.verdicts])
            for i, trial in enumerate(trials):
                run_id = by_number[trial.number]
                stored = trial_verdicts(study, trial, trials=trials[: i + 1])
                out["as stored"][run_id] = _primary([v.verdict for v in stored])
                run = mine[i]
                curves = TrialCurves.from_frozen_trial(trial, num_classes=run["num_classes"])
                alone = diagnose_trial(curves, (), num_layers=run["num_layers"])
                out["alone"][run_id] = _primary([v.verdict for v in alone])
    return out


def confusion(runs: list[dict[str, Any]], primary: dict[str, str]) -> tuple[str, int, int, int]:
    """The table, correct count, total and pathological runs called healthy."""
    columns = [*VERDICTS, "none"]
    counts: dict[str, Counter[str]] = {label: Counter() for label in LABELS}
    correct = healthy_wrong = 0
    for run in runs:
        got = primary[run["id"]]
        counts[run["label"]][got] += 1
        correct += got == run["expected"]
        healthy_wrong += run["label"] != "healthy" and got == "healthy"
    width = max(len(label) for label in LABELS)
    head = f"{'label (expected)':<{width + 16}} " + " ".join(f"{c[:11]:>11}" for c in columns)
    lines = [head]
    expected = {r["label"]: r["expected"] for r in runs}
    for label in LABELS:
        if not counts[label]:
            continue
        row = f"{label + ' (' + expected[label][:12] + ')':<{width + 16}} "
        lines.append(row + " ".join(f"{counts[label][c] or '.':>11}" for c in columns))
    return "\n".join(lines), correct, len(runs), healthy_wrong


PUBLIC_LABELS = ("healthy", "overfitting", "lr_too_high", "underfitting", "batchnorm_mismatch")
PUBLIC_SPLITS = ("dev", "held_out")


def load_public_runs(path: Path) -> list[dict[str, Any]]:
    """The public set's runs (``bench/public_runs.json``)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    runs: list[dict[str, Any]] = payload["runs"]
    return runs


def public_primary(run: dict[str, Any]) -> str:
    """The primary verdict of one public run judged alone, as ``thaw diagnose --history``."""
    data: dict[str, Any] = {"history": run["history"]}
    if run.get("params"):
        data["params"] = run["params"]
    if run.get("num_classes"):
        data["num_classes"] = run["num_classes"]
    return _primary([v.verdict for v in diagnose_history(data).verdicts])


def _share(hits: int, total: int) -> str:
    return f"{hits}/{total} ({100 * hits / total:.0f}%)" if total else "0/0"


def public_summary(
    runs: list[dict[str, Any]], primary: dict[str, str], miss_splits: tuple[str, ...] = ("dev",)
) -> str:
    """Accuracy per half (high-confidence non-ambiguous labels, and overall), the confusion
    table over all runs and the misses of the halves in ``miss_splits`` (the dev half by
    default: rule changes look at the dev half's failures only)."""
    lines = []
    for name, part in (
        *((split, [r for r in runs if r["split"] == split]) for split in PUBLIC_SPLITS),
        ("all", runs),
    ):
        firm = [r for r in part if r["confidence"] == "high" and not r["ambiguous"]]
        firm_hits = sum(primary[r["id"]] == r["label"] for r in firm)
        hits = sum(primary[r["id"]] == r["label"] for r in part)
        false_healthy = sum(r["label"] != "healthy" and primary[r["id"]] == "healthy" for r in part)
        lines.append(
            f"{name:<9} high-confidence non-ambiguous {_share(firm_hits, len(firm))}; "
            f"all labels {_share(hits, len(part))}; pathological runs called healthy: "
            f"{false_healthy}"
        )
    columns = [*VERDICTS, "none"]
    counts: dict[str, Counter[str]] = {label: Counter() for label in PUBLIC_LABELS}
    for run in runs:
        counts[run["label"]][primary[run["id"]]] += 1
    width = max(len(label) for label in PUBLIC_LABELS)
    lines.append("")
    lines.append(f"{'label':<{width}} " + " ".join(f"{c[:11]:>11}" for c in columns))
    for label in PUBLIC_LABELS:
        if counts[label]:
            lines.append(
                f"{label:<{width}} " + " ".join(f"{counts[label][c] or '.':>11}" for c in columns)
            )
    wrong = [r for r in runs if r["split"] in miss_splits and primary[r["id"]] != r["label"]]
    if wrong:
        lines.append("")
        lines.append(
            f"misdiagnosed in {' and '.join(miss_splits)} (split, id, label [confidence, "
            "ambiguous], got):"
        )
        for r in wrong:
            flag = ", ambiguous" if r["ambiguous"] else ""
            lines.append(
                f"  {r['split']:<8} {r['id']}: {r['label']} [{r['confidence']}{flag}] -> "
                f"{primary[r['id']]}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="diagnosis accuracy on the labelled runs")
    parser.add_argument(
        "path", nargs="?", default=str(Path(__file__).with_name("labelled_runs.json"))
    )
    parser.add_argument("--no-probes", action="store_true", help="ignore the stored probes")
    parser.add_argument(
        "--public",
        default=str(Path(__file__).with_name("public_runs.json")),
        help="the public set of labelled runs (default: bench/public_runs.json)",
    )
    parser.add_argument("--no-public", action="store_true", help="skip the public set")
    parser.add_argument(
        "--held-out-misses",
        action="store_true",
        help="also list the held-out half's misses (by default only the dev half's are listed)",
    )
    args = parser.parse_args(argv)
    path = Path(args.path)
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    by_family = Counter(r["family"] for r in runs)
    by_label = Counter(r["label"] for r in runs)
    print(
        f"{len(runs)} labelled runs from {path}: "
        + ", ".join(f"{f} {n}" for f, n in sorted(by_family.items()))
    )
    print("per label: " + ", ".join(f"{label} {by_label[label]}" for label in LABELS))
    print(f"probes: {'off' if args.no_probes else 'on where stored'}")
    results = score(path, probes=not args.no_probes)
    for way in ("alone", "study", "as stored"):
        table, correct, total, healthy_wrong = confusion(runs, results[way])
        print()
        print(
            f"== {way}: {correct}/{total} primary verdicts correct ({100 * correct / total:.0f}%); "
            f"pathological runs called healthy: {healthy_wrong}"
        )
        print(table)
    wrong = [
        (r["id"], r["expected"], {w: results[w][r["id"]] for w in results})
        for r in runs
        if any(results[w][r["id"]] != r["expected"] for w in results)
    ]
    if wrong:
        print()
        print("misdiagnosed (id, expected, got per way):")
        for run_id, expected, got in wrong:
            print(
                f"  {run_id}: expected {expected}; " + ", ".join(f"{w} {g}" for w, g in got.items())
            )
    if not args.no_public:
        public_path = Path(args.public)
        public = load_public_runs(public_path)
        by_split = Counter(r["split"] for r in public)
        print()
        print(
            f"== public set: {len(public)} runs from {public_path} "
            + "("
            + ", ".join(f"{s} {by_split[s]}" for s in PUBLIC_SPLITS)
            + "), "
            "each alone as thaw diagnose --history would"
        )
        splits = PUBLIC_SPLITS if args.held_out_misses else ("dev",)
        print(public_summary(public, {r["id"]: public_primary(r) for r in public}, splits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
