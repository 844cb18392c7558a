"""Diagnosis: why did the validation loss of a fine-tuning trial rise?

Pure Python over what Optuna storage holds (see ``docs/storage.md``): trial params, the
``history`` user attribute, end-of-trial probes and a few other user attributes. Never imports
Keras, TensorFlow or thaw's ``objectives``/``search`` packages.

One job per module:

- ``_thresholds``: :class:`Thresholds`, the named constants of every rule;
- ``_features``: :class:`TrialCurves` and what one trial's curves show on their own;
- ``_verdicts``: per-trial rules, :func:`diagnose_trial` (works alone; peers refine);
- ``_inputs``: what a study holds for the rules, and :func:`trial_verdicts`, the one verdict
  function every view calls;
- ``_profile``: the BatchNorm shift profile and the block it points to;
- ``_moves`` and ``_next``: the moves a trial's cause calls for, and the next one to take;
- ``_study``: study findings and :func:`diagnose_study`.
"""

from thaw.reports.diagnosis._features import TrialCurves
from thaw.reports.diagnosis._history import (
    HISTORY_PARAMS,
    HistoryDiagnosis,
    diagnose_history,
    history_curves,
    load_history,
)
from thaw.reports.diagnosis._inputs import (
    FINISHED_STATES,
    StudyInputs,
    read_study_inputs,
    study_chance,
    study_chance_loss,
    study_multilabel,
    study_num_classes,
    study_thresholds,
    study_verdicts,
    trial_verdicts,
)
from thaw.reports.diagnosis._kerastuner import (
    KerasTunerDiagnosis,
    KerasTunerTrial,
    diagnose_kerastuner,
    read_kerastuner,
)
from thaw.reports.diagnosis._moves import (
    CAUSE_WORDS,
    CAUSES,
    MOVES_BY_CAUSE,
    Candidate,
    Move,
    cause_of,
    first_untried_move,
    near_chance,
    params_key,
    propose_moves,
)
from thaw.reports.diagnosis._next import (
    TOP_K,
    next_move,
    still_falling,
    study_profile,
    trial_cause,
    trial_key,
    trial_length,
    trial_own_epochs,
    trial_score,
)
from thaw.reports.diagnosis._profile import ShiftProfile, profile_block
from thaw.reports.diagnosis._study import (
    ClimbFinding,
    ClimbSummary,
    DomainShift,
    FeatureExtractionComparison,
    ParameterImportances,
    ParamRange,
    RobustRegion,
    StudyDiagnosis,
    TrialDiagnosis,
    climb_summary,
    diagnose_study,
    feature_extraction_vs_finetuning,
    parameter_importances,
    robust_region,
)
from thaw.reports.diagnosis._thresholds import Thresholds
from thaw.reports.diagnosis._verdicts import (
    BATCHNORM_MISMATCH,
    HEALTHY,
    LR_TOO_HIGH,
    OVERFITTING,
    UNDERFITTING,
    VERDICTS,
    WEAK_REGULARISATION,
    Verdict,
    diagnose_trial,
)

__all__ = [
    "KerasTunerDiagnosis",
    "KerasTunerTrial",
    "diagnose_kerastuner",
    "read_kerastuner",
    "CAUSES",
    "CAUSE_WORDS",
    "MOVES_BY_CAUSE",
    "Candidate",
    "Move",
    "TOP_K",
    "next_move",
    "still_falling",
    "study_profile",
    "trial_cause",
    "trial_key",
    "trial_length",
    "trial_own_epochs",
    "trial_score",
    "cause_of",
    "first_untried_move",
    "near_chance",
    "params_key",
    "propose_moves",
    "ShiftProfile",
    "profile_block",
    "HISTORY_PARAMS",
    "HistoryDiagnosis",
    "diagnose_history",
    "history_curves",
    "load_history",
    "FINISHED_STATES",
    "StudyInputs",
    "read_study_inputs",
    "study_chance",
    "study_chance_loss",
    "study_multilabel",
    "study_num_classes",
    "study_thresholds",
    "study_verdicts",
    "trial_verdicts",
    "BATCHNORM_MISMATCH",
    "HEALTHY",
    "LR_TOO_HIGH",
    "OVERFITTING",
    "UNDERFITTING",
    "VERDICTS",
    "WEAK_REGULARISATION",
    "ClimbFinding",
    "ClimbSummary",
    "DomainShift",
    "FeatureExtractionComparison",
    "ParamRange",
    "ParameterImportances",
    "RobustRegion",
    "StudyDiagnosis",
    "Thresholds",
    "TrialCurves",
    "TrialDiagnosis",
    "Verdict",
    "climb_summary",
    "diagnose_study",
    "diagnose_trial",
    "feature_extraction_vs_finetuning",
    "parameter_importances",
    "robust_region",
]
