"""Meta-training: inner unrolls, meta-losses, gradient estimators and the trainer.

A learned optimizer's θ is trained on a distribution of tasks by unrolling
inner training (`lax.scan`), scoring each truncated window with a
meta-objective (mean log inner loss by default), estimating the meta-gradient
by truncated backpropagation
([`TruncatedBPTT`][mnemosyne.meta.TruncatedBPTT]) antithetic evolution
strategies ([`AntitheticES`][mnemosyne.meta.AntitheticES]) or persistent
evolution strategies ([`PersistentES`][mnemosyne.meta.PersistentES]), and stepping θ
with
an outer optax optimizer ([`MetaTrainer`][mnemosyne.meta.MetaTrainer]).
Tasks are duck-typed: `init(key) -> params`, `loss(params, batch) -> scalar`,
`sample_batch(key) -> batch`; a family has `sample(key) -> task`.
"""

from ._checkpoint import (
    CheckpointError,
    IncompatibleCheckpointError,
    describe_settings,
    load_checkpoint,
    read_checkpoint_header,
    save_checkpoint,
)
from ._estimators import (
    AbstractGradientEstimator,
    AntitheticES,
    PersistentES,
    PESState,
    TruncatedBPTT,
)
from ._meta_loss import (
    MetaLoss,
    get_meta_loss,
    guard_meta_loss,
    is_diverged,
    last_loss,
    mean_log_loss,
    mean_loss,
)
from ._plots import plot_history
from ._presets import (
    PRESETS,
    BroadFamily,
    Preset,
    PresetFamily,
    broad_configs,
    fourth_probe_tasks,
    list_presets,
    probe_tasks,
    second_probe_tasks,
    stress_validation_tasks,
    third_probe_tasks,
    train_preset,
    validation_tasks,
)
from ._trainer import MetaTrainer, task_config_key
from ._unroll import (
    AbstractTruncationSchedule,
    ConstantTruncationSchedule,
    LogUniformTruncationSchedule,
    TruncationState,
    UniformTruncationSchedule,
    UnrollOutput,
    expired_truncation_state,
    init_truncation_state,
    trajectory_keys,
    truncated_unroll,
    unroll,
)

__all__ = [
    "AbstractGradientEstimator",
    "AbstractTruncationSchedule",
    "AntitheticES",
    "BroadFamily",
    "CheckpointError",
    "ConstantTruncationSchedule",
    "IncompatibleCheckpointError",
    "LogUniformTruncationSchedule",
    "MetaLoss",
    "MetaTrainer",
    "PESState",
    "PersistentES",
    "PRESETS",
    "Preset",
    "PresetFamily",
    "TruncatedBPTT",
    "TruncationState",
    "UniformTruncationSchedule",
    "UnrollOutput",
    "broad_configs",
    "describe_settings",
    "expired_truncation_state",
    "get_meta_loss",
    "guard_meta_loss",
    "init_truncation_state",
    "is_diverged",
    "last_loss",
    "list_presets",
    "load_checkpoint",
    "mean_log_loss",
    "mean_loss",
    "plot_history",
    "read_checkpoint_header",
    "save_checkpoint",
    "train_preset",
    "task_config_key",
    "trajectory_keys",
    "truncated_unroll",
    "unroll",
    "probe_tasks",
    "second_probe_tasks",
    "fourth_probe_tasks",
    "third_probe_tasks",
    "stress_validation_tasks",
    "validation_tasks",
]
