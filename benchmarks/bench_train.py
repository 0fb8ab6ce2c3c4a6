"""A whole training step (forward, backward, update, apply) at batch 128."""

from ._common import TRAIN_BATCH, TrainStepRunner, train_step_ratio

TASKS = ["vit_digits", "mlp_digits"]


class TimeTrainStep:
    """One jitted training step of a suite task at batch 128 (built from the
    task's data; the registered tasks sample 64 or 128)."""

    params = [TASKS, ["mnemosyne", "adam"]]
    param_names = ["task", "optimizer"]
    timeout = 600
    number = 1
    repeat = (1, 10, 20.0)

    def setup(self, task, optimizer):
        self.runner = TrainStepRunner(task, optimizer, TRAIN_BATCH)

    def time_train_step(self, task, optimizer):
        self.runner()


class TrainStepRatio:
    """Mnemosyne's training step over Adam's, interleaved in one process
    (target for vit_digits: ≤ 1.3x)."""

    params = [TASKS]
    param_names = ["task"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, task):
        self.result = train_step_ratio(task)

    def track_train_step_ratio(self, task):
        return self.result["ratio"]

    track_train_step_ratio.unit = "x adam"
