"""Names shared by the training entrypoint and the analysis: logged keys, summary keys, frame columns.

Defined once here so `pipeline` and `analysis` can never drift apart. This module imports nothing
heavy (no torch, no wandb) so the analysis can use it without pulling in the trainer.
"""

# per-step history keys (one wandb history row per training step, `_step` = the training step)
LR = "lr"                  # learning rate actually used at this step
LRE = "lre"                # log10 of that learning rate (the range test's exponent)
LOSS = "loss"              # raw minibatch cross-entropy (nats)
LOG10_LOSS = "log10_loss"  # log10 of the raw loss, the seed's `lossi`
SMOOTH_LOSS = "smooth_loss"  # bias-corrected EMA of the raw loss (range tests only, may be absent)
DEV_LOSS = "dev_loss"      # full dev-split loss, only on eval steps

STEP_KEYS = (LR, LRE, LOSS, LOG10_LOSS)

# run summary keys written at the end of a run
TRAIN_LOSS = "train_loss"
TEST_LOSS = "test_loss"
FINAL_STEP = "final_step"          # last training step that ran (and was logged)
DIVERGED_AT_STEP = "diverged_at_step"  # first step whose loss was not finite, or absent
STOP_STEP = "stop_step"            # step at which an early-stop rule ended the run, or absent
PAUSED_AT_STEP = "paused_at_step"  # the step a paused run (pause_at_step) will continue from, or absent
STOP_REASON = "stop_reason"        # "climb" | "non_finite" | absent when the run went to the end
BEST_SMOOTH_LOSS = "best_smooth_loss"
STEPS_PER_SECOND = "steps_per_second"

# reasons a run stopped early
STOP_CLIMB = "climb"
STOP_NON_FINITE = "non_finite"

# wandb job types: how the analysis tells a training run from its own analysis runs
JOB_TRAIN = "train"
JOB_ANALYSIS = "analysis"

# columns of the analysis' tidy frame, one row per (run, step); config fields come in between
ID_COLUMNS = ("run_id", "run_name", "group", "sweep")
STEP_COLUMN = "step"


# how a sweep launches the trainer: the sweep YAMLs' `program` and `command`, the zoom sweep the
# analysis writes, and the runner's check that a sweep runs the trainer all read these
TRAINER_MODULE = "lrscan.pipeline.train"
# also the trainer: the module name a checkout ran before lrscan installed as one package (users' YAMLs name it)
TRAINER_MODULES = (TRAINER_MODULE, "pipeline.train")
TRAINER_PROGRAM = "pipeline/train/__main__.py"  # `${program}`; W&B keeps it as the sweep's program
# python3: W&B's ${interpreter} is the literal `python`, which many machines lack
TRAINER_COMMAND = ("${env}", "python3", "-m", TRAINER_MODULE, "${args}")

# analysis' runs frame: the summary keys whose last logged value was NaN (a frame reads a NaN as missing; a run
# judged on such a key has diverged, analysis.judge). A column only where some run has one.
NAN_LAST = "nan_last"
