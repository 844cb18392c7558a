"""Diagnose the trials of a KerasTuner search from its project folder (``trial_*/trial.json``).

Read as JSON, never through Keras or keras_tuner. Each trial folder's ``trial.json`` (KerasTuner
1.4) holds the trial's hyperparameters (``hyperparameters.space`` and ``.values``), its status,
score and metrics; KerasTuner records each metric at the best epoch only. A trial trained by
``thaw.objectives.FineTuneHyperModel`` also has ``thaw_history.json`` beside it: the per-epoch
curves, the number of classes and the base's layer facts. A Hyperband trial that continues
another (``tuner/trial_id``) gets that trial's epochs before its own.

Each trial is judged alone by the verdict function of ``thaw diagnose --history``
(:func:`diagnose_history`); the study's findings come from :func:`diagnose_study` over the
trials as an in-memory Optuna study (nothing is written anywhere).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from thaw._keys import NUM_CLASSES, NUM_LAYERS, OBJECTIVE_METRIC
from thaw.reports.diagnosis._history import HistoryDiagnosis, diagnose_history
from thaw.reports.diagnosis._study import StudyDiagnosis, diagnose_study
from thaw.reports.diagnosis._thresholds import Thresholds

__all__ = ["KerasTunerDiagnosis", "KerasTunerTrial", "diagnose_kerastuner", "read_kerastuner"]

HISTORY_FILE = "thaw_history.json"
#: KerasTuner's own bookkeeping values (Hyperband), not searched parameters.
_TUNER_PREFIX = "tuner/"
_FACTS = ("of_layers", "batchnorm_layers")


@dataclass(frozen=True)
class KerasTunerTrial:
    """One KerasTuner trial as read from its folder."""

    trial_id: str
    status: str
    score: float | None
    values: Mapping[str, Any]
    space: Mapping[str, BaseDistribution]
    history: Mapping[str, list[float | None]]
    #: True when the curves are per epoch (``thaw_history.json``), False: the best epoch only.
    per_epoch: bool
    num_classes: int | None = None
    facts: Mapping[str, int] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """The searched values (KerasTuner's ``tuner/...`` bookkeeping left out)."""
        return {k: v for k, v in self.values.items() if not k.startswith(_TUNER_PREFIX)}


@dataclass(frozen=True)
class KerasTunerDiagnosis:
    """The trials read, each one's verdicts, and the study's findings."""

    folder: Path
    objective: str | None
    trials: tuple[KerasTunerTrial, ...]
    verdicts: Mapping[str, HistoryDiagnosis]
    study: StudyDiagnosis

    @property
    def per_epoch(self) -> int:
        return sum(t.per_epoch for t in self.trials)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "objective": self.objective,
            "trials_read": len(self.trials),
            "per_epoch_curves": self.per_epoch,
            "trials": [
                {
                    "trial_id": t.trial_id,
                    "status": t.status,
                    "score": t.score,
                    **(
                        self.verdicts[t.trial_id].to_dict()
                        if t.trial_id in self.verdicts
                        else {"verdicts": []}
                    ),
                }
                for t in self.trials
            ],
            "study": self.study.to_dict(),
        }

    def render_text(self) -> str:
        n = len(self.trials)
        best_only = n - self.per_epoch
        lines = [
            f"KerasTuner project {self.folder}: {n} trials read"
            + (f"; objective {self.objective}" if self.objective else ""),
        ]
        if best_only:
            lines.append(
                f"  {best_only} of them have the best epoch's metrics only (KerasTuner records no "
                "more): their verdicts rest on one epoch. FineTuneHyperModel records every epoch."
            )
        text = "\n".join(lines) + "\n\n"
        for t in self.trials:
            found = self.verdicts.get(t.trial_id)
            if found is None:
                text += f"Run from trial {t.trial_id} ({t.status.lower()}): no curves recorded\n"
            else:
                text += found.render_text(f"trial {t.trial_id}, {t.status.lower()}")
        return text + "\n" + self.study.render_findings()


def _distribution(item: Mapping[str, Any]) -> tuple[str, BaseDistribution] | None:
    kind, config = item.get("class_name"), item.get("config") or {}
    name = config.get("name")
    if not isinstance(name, str):
        return None
    if kind == "Int":
        low, high = int(config["min_value"]), int(config["max_value"])
        return name, IntDistribution(low, high, log=config.get("sampling") == "log")
    if kind == "Float":
        flow, fhigh = float(config["min_value"]), float(config["max_value"])
        return name, FloatDistribution(flow, fhigh, log=config.get("sampling") == "log")
    if kind == "Choice":
        return name, CategoricalDistribution(list(config["values"]))
    if kind == "Boolean":
        return name, CategoricalDistribution([False, True])
    if kind == "Fixed":
        return name, CategoricalDistribution([config.get("value")])
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _best_epoch_metrics(metrics: Any) -> dict[str, list[float | None]]:
    """KerasTuner's metrics (one observation per recorded step) as per-step series."""
    tracked = metrics.get("metrics") if isinstance(metrics, Mapping) else None
    series: dict[str, list[float | None]] = {}
    for name, record in (tracked or {}).items():
        observations = record.get("observations") if isinstance(record, Mapping) else None
        values = []
        for obs in sorted(observations or [], key=lambda o: o.get("step", 0)):
            numbers = [x for x in map(_number, obs.get("value") or []) if x is not None]
            values.append(sum(numbers) / len(numbers) if numbers else None)
        series[str(name)] = values
    return series


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None


def _read_trial(folder: Path) -> tuple[KerasTunerTrial, int]:
    state = _read_json(folder / "trial.json")
    if not isinstance(state, Mapping) or "trial_id" not in state:
        raise ValueError(f"{folder / 'trial.json'} is not a KerasTuner trial (no trial_id)")
    hps = state.get("hyperparameters") or {}
    values = dict(hps.get("values") or {})
    space = dict(filter(None, (_distribution(item) for item in hps.get("space") or [])))
    extra = folder / HISTORY_FILE
    facts: dict[str, int] = {}
    num_classes = None
    initial = 0
    if extra.is_file():
        record = _read_json(extra)
        history = {
            str(k): [_number(v) for v in vs] for k, vs in (record.get("history") or {}).items()
        }
        per_epoch = True
        k = record.get("num_classes")
        num_classes = k if isinstance(k, int) and not isinstance(k, bool) else None
        params = record.get("params") or {}
        facts = {f: int(params[f]) for f in _FACTS if isinstance(params.get(f), int)}
        initial = int(record.get("initial_epoch") or 0)
    else:
        history = _best_epoch_metrics(state.get("metrics"))
        per_epoch = False
    trial = KerasTunerTrial(
        trial_id=str(state["trial_id"]),
        status=str(state.get("status") or "UNKNOWN"),
        score=_number(state.get("score")),
        values=values,
        space=space,
        history=history,
        per_epoch=per_epoch,
        num_classes=num_classes,
        facts=facts,
    )
    return trial, initial


def _project_folder(folder: Path) -> Path:
    """``folder`` itself when it holds ``trial_*`` folders, else its one project subfolder."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; give a KerasTuner project folder")
    if any(folder.glob("trial_*/trial.json")):
        return folder
    projects = sorted(p for p in folder.iterdir() if any(p.glob("trial_*/trial.json")))
    if len(projects) == 1:
        return projects[0]
    if projects:
        raise ValueError(
            f"{folder} holds {len(projects)} KerasTuner projects "
            f"({', '.join(p.name for p in projects)}); give one of them"
        )
    raise ValueError(
        f"{folder} has no trial_*/trial.json; give the KerasTuner project folder "
        "(directory/project_name of the tuner)"
    )


def read_kerastuner(folder: Path | str) -> tuple[Path, list[KerasTunerTrial]]:
    """The project folder and its trials in trial-id order; a Hyperband trial that continues
    another gets that trial's earlier epochs before its own. Raises ``ValueError`` (one line)."""
    project = _project_folder(Path(folder))
    read = [_read_trial(p) for p in sorted(project.glob("trial_*")) if (p / "trial.json").is_file()]
    by_id = {t.trial_id: (t, initial) for t, initial in read}
    trials = []
    for trial, initial in read:
        parent = by_id.get(str(trial.values.get("tuner/trial_id")))
        if trial.per_epoch and initial > 0 and parent is not None and parent[0].per_epoch:
            earlier = parent[0].history
            history = {
                k: list(earlier.get(k, [None] * initial))[:initial] + list(v)
                for k, v in trial.history.items()
            }
            trial = KerasTunerTrial(**{**trial.__dict__, "history": history})
        trials.append(trial)
    return project, trials


def _objective(trials: list[KerasTunerTrial]) -> tuple[str | None, StudyDirection]:
    """The metric whose best value is each trial's score (val_loss first), and its direction."""
    scored = [t for t in trials if t.score is not None and t.history]
    names = sorted({k for t in scored for k in t.history}, key=lambda k: (k != "val_loss", k))
    for name in names:
        for direction, pick in ((StudyDirection.MINIMIZE, min), (StudyDirection.MAXIMIZE, max)):
            if scored and all(
                (vs := [v for v in t.history.get(name, []) if v is not None])
                and math.isclose(pick(vs), t.score or 0.0, rel_tol=1e-6, abs_tol=1e-9)
                for t in scored
            ):
                return name, direction
    return None, StudyDirection.MINIMIZE


def _as_study(
    trials: list[KerasTunerTrial], metric: str | None, direction: StudyDirection
) -> optuna.Study:
    storage = optuna.storages.InMemoryStorage()
    name = "kerastuner"
    storage.create_new_study([direction], name)
    study = optuna.Study(study_name=name, storage=storage)
    if metric is not None:
        study.set_user_attr(OBJECTIVE_METRIC, metric)
    ks = {t.num_classes for t in trials if t.num_classes is not None}
    if len(ks) == 1:
        study.set_user_attr(NUM_CLASSES, ks.pop())
    layers = {t.facts["of_layers"] for t in trials if "of_layers" in t.facts}
    if len(layers) == 1:
        study.set_user_attr(NUM_LAYERS, layers.pop())
    for t in trials:
        params = {k: v for k, v in t.params.items() if k in t.space}
        complete = t.status == "COMPLETED" and t.score is not None
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: t.space[k] for k in params},
                value=t.score if complete else None,
                state=TrialState.COMPLETE if complete else TrialState.FAIL,
                user_attrs={"history": dict(t.history), "kerastuner_trial_id": t.trial_id},
            )
        )
    return study


def diagnose_kerastuner(
    folder: Path | str, thresholds: Thresholds | None = None
) -> KerasTunerDiagnosis:
    """Read a KerasTuner project folder and diagnose every trial, then the study.

    Raises:
        ValueError: One line: not a project folder, a ``trial.json`` that cannot be read.
    """
    project, trials = read_kerastuner(folder)
    metric, direction = _objective(trials)
    verdicts: dict[str, HistoryDiagnosis] = {}
    for t in trials:
        if not t.history.get("val_loss") or all(v is None for v in t.history["val_loss"]):
            continue
        params = {
            k: v
            for k, v in t.params.items()
            if k in ("learning_rate", "unfrozen_layers", "dropout", "weight_decay", "batchnorm")
        }
        record: dict[str, Any] = {"history": dict(t.history), "params": {**params, **t.facts}}
        if t.num_classes is not None:
            record["num_classes"] = t.num_classes
        try:
            verdicts[t.trial_id] = diagnose_history(record, thresholds)
        except ValueError:
            continue  # a trial with unusable curves has no verdict, as in a study
    study = diagnose_study(_as_study(trials, metric, direction), thresholds)
    return KerasTunerDiagnosis(project, metric, tuple(trials), verdicts, study)
