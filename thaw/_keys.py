"""Storage keys shared by ``thaw.search``, ``thaw.objectives`` and ``thaw.reports``.

Dependency-free, so every package can import it. Trial user attrs hold what one trial is and
why it was run; study user attrs hold what was measured before the search.
"""

from __future__ import annotations

__all__ = [
    "BUDGET_EPOCHS",
    "CHANCE",
    "CONFIG",
    "CONFIG_HASH",
    "DATA",
    "DETERMINISM",
    "DOMAIN_SHIFT",
    "EPOCHS_SPENT",
    "GRADUAL_UNFREEZING",
    "HEARTBEAT",
    "LOST",
    "MANIFEST",
    "MODELS_DIR",
    "MODEL_FINGERPRINT",
    "NUMBER",
    "NUM_CLASSES",
    "NUM_LAYERS",
    "OBJECTIVE_METRIC",
    "PROPOSED_BY",
    "RANGE_TEST",
    "RETRY_OF",
    "SCREEN",
    "SCREEN_WINNER",
    "SHIFT_PROFILE",
    "TASK",
    "CONTINUES",
    "TRIAL_EPOCHS",
    "UNFROZEN_BLOCK",
    "VERSION",
    "WORKER",
]

#: Trial attr of a trial the closed loop queued: ``{"trial": n, "cause": ..., "move": ...,
#: "words": ..., "best_before": value or None}`` (the trial whose diagnosis proposed it, the
#: cause read from that diagnosis, the move, and the study's best value when it was queued).
PROPOSED_BY = "thaw:proposed_by"

#: Trial attr of a trial that trains for its own number of epochs instead of the study's
#: ``train.epochs`` (an int; the closed loop's "train longer" move queues such trials).
TRIAL_EPOCHS = "thaw:epochs"

#: Trial attr of a "train longer" trial: ``{"trial": n, "epochs": k}``: it continues from the
#: weights trial ``n`` ended with after ``k`` epochs, for ``thaw:epochs`` minus ``k`` more, when
#: the worker that runs it still holds them (else it trains ``thaw:epochs`` from the start).
CONTINUES = "thaw:continues"

#: Trial attr of a trial of the screened informed start: ``{"strategy": label, "round": k,
#: "rung": epochs, "of": n or None}`` (round k trains ``rung`` epochs; ``of`` is the trial of
#: the round before that it continues). The survivor of the last round trains at full length
#: and carries the ``strategy`` attr instead.
SCREEN = "thaw:screen"

#: Study attr: the learning-rate range test run before the search, per BatchNorm mode
#: (``{"modes": {mode: result}, "epochs": spent, "window": [low, high] or None}``).
RANGE_TEST = "thaw:range_test"

#: Trial attr of the screen's survivor, the informed start's trial at full length:
#: ``{"of": n, "round": k}`` (the screen trial it continues, and that trial's round).
SCREEN_WINNER = "thaw:screen_winner"

#: Trial attr of the gradual-unfreezing step after the informed start (closed loop off):
#: ``{"of": n, "unfrozen_layers": k}``.
GRADUAL_UNFREEZING = "thaw:gradual_unfreezing_of"

#: Study attr: the metric the objective reports (``val_loss``, ``val_accuracy``, ...).
OBJECTIVE_METRIC = "thaw:objective_metric"

#: Study attr: the study file as parsed (password masked), diagnosis thresholds included.
CONFIG = "thaw:config"

#: Study attr: the hash of the settings that change what a trial trains.
CONFIG_HASH = "thaw:config_hash"

#: Study attr: layers with weights in the pretrained base.
NUM_LAYERS = "thaw:num_layers"

#: Study attr: how many classes the target has (the chance level ln K).
NUM_CLASSES = "thaw:num_classes"

#: Study attr: what the target is: ``multiclass`` (one integer label per image, a softmax head,
#: sparse categorical cross-entropy) or ``multilabel`` (a 0/1 row of labels per image, a sigmoid
#: head, binary cross-entropy). Studies stored without it are ``multiclass``.
TASK = "thaw:task"

#: Study attr: the chance levels of the loss and the accuracy, ``{"loss": ..., "accuracy": ...}``:
#: ln K and 1/K for ``multiclass``; for ``multilabel`` those of the best constant guess, each
#: label's training frequency p: the mean over labels of the binary entropy H(p) and of
#: max(p, 1 - p). Studies stored without it use ln K and 1/K.
CHANCE = "thaw:chance"

#: Study attr: what the data is (``class_names``, counts per split).
DATA = "thaw:data"

#: Study attr: the epochs all trials together may spend.
BUDGET_EPOCHS = "thaw:budget_epochs"

#: Study attr: the epochs spent so far, pruned trials and probes included.
EPOCHS_SPENT = "thaw:epochs_spent"

#: Study attr: the thaw version that created the study.
VERSION = "thaw:version"

#: Study attr: versions and settings of the run (the report's manifest).
MANIFEST = "thaw:manifest"

#: Study attr: how far the target images sit from the pretraining ones, per layer.
DOMAIN_SHIFT = "thaw:domain_shift"

#: Study attr: whether training was deterministic, and why not.
DETERMINISM = "thaw:determinism"

#: Study attr: the model's content fingerprint (the model file's bytes, or an application's
#: name and weights), not its path: a study joined from another folder or machine is the same.
MODEL_FINGERPRINT = "thaw:model_fingerprint"

#: Study attr: where the kept ``.keras`` files of the trials are.
MODELS_DIR = "thaw:models_dir"

#: Trial attr of the copies that the importance evaluators read: the original trial number.
NUMBER = "thaw:number"

#: Trial attr: ``host:pid`` of the process running the trial.
WORKER = "thaw:worker"

#: Trial system attr: when (``time.time()``) the worker of a running trial last said it is alive,
#: on storages without Optuna's heartbeats (the gRPC proxy, journal files).
HEARTBEAT = "thaw:heartbeat"

#: Trial attr: why the trial was lost (its worker died, Ctrl-C).
LOST = "thaw:lost"

#: Trial attr of a retry: ``{"trial": number, "reason": ...}``.
RETRY_OF = "thaw:retry_of"

#: Study attr: the per-layer BatchNorm shift profile measured at creation, bottom to top, in the
#: units "unfrozen layers" counts: ``{"unit": "layers" | "blocks", "groups": [{"name": ...,
#: "shift": score or None, "batchnorm": count}], "block": {"start": i, "size": k, "first": name,
#: "last": name} or None}`` (``block``: where the profile points, by ``search._budget``'s rule).
SHIFT_PROFILE = "thaw:shift_profile"

#: Trial attr of a trial that unfroze a block (``search_space.block_start``): ``{"start": i,
#: "stop": j, "first": name, "last": name, "top": bool, "depth": n}``, counted from the bottom
#: (``stop`` excluded); ``top`` when the block reaches the top (the usual unfreezing).
UNFROZEN_BLOCK = "thaw:unfrozen_block"
