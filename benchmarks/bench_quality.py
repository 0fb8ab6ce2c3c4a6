"""Quality as tracked numbers: final training loss with the pretrained weights."""

from ._common import MEMORY_DTYPES, pretrained_or_skip, run_quality

QUALITY_TASKS = ["mlp_digits", "vit_digits", "lm_copy"]


class FinalLoss:
    """Final inner training loss after `num_steps` steps at a fixed seed, for the
    pretrained Mnemosyne (learning rate 1; `mnemosyne_bf16` stores its memory in
    bfloat16) and Adam (lr 1e-3). Skipped when the pretrained weights are not
    shipped yet."""

    params = [QUALITY_TASKS, ["mnemosyne", "mnemosyne_bf16", "adam"]]
    param_names = ["task", "optimizer"]
    timeout = 900
    num_steps = 300

    def setup(self, task, optimizer):
        self.lopt = pretrained_or_skip("default") if optimizer != "adam" else None

    def track_final_loss(self, task, optimizer):
        return run_quality(
            task, self.lopt, self.num_steps, memory_dtype=MEMORY_DTYPES.get(optimizer)
        )

    track_final_loss.unit = "loss"
