"""Self-checks for the notebooks' exercises: one printed sentence that says what is wrong and where.

Each `check_*` function runs the student's answer on a small probe, prints one line (a tick
when it passes; else what is wrong and where to look) and returns True or False. A check never
raises for a wrong answer: an exercise not written yet (the exercise's own NotImplementedError,
not one PyTorch raises) is reported as "not done yet", and the notebook goes on with skinlib's
reference through `use_yours_or`. `compare_guess` answers the "predict before you run" cells.

One module per notebook (`model` for 01, `training` for 02, `transfer` for 03, `evaluation` for 04,
`decision` for 05), and `core`,
what they all share; import every check from here: `from skinlib.checks import check_...`.
"""
from skinlib.checks.core import compare_guess, use_yours_or
from skinlib.checks.model import check_fc1_inputs, check_parameter_formulas, check_simple_cnn
from skinlib.checks.training import (INITIAL_LOSS, check_dataset_class, check_evaluate, check_initial_loss,
                                     check_train_one_epoch, reference_dataset)
from skinlib.checks.transfer import (check_best_epoch, check_lr_suggestion, check_parameter_groups, check_resnet_head,
                                     reference_best_epoch, reference_parameter_groups)
from skinlib.checks.evaluation import check_grad_cam, check_scores_from_confusion
from skinlib.checks.decision import check_ppv, check_threshold_for_sensitivity

__all__ = ["check_fc1_inputs", "check_simple_cnn", "check_parameter_formulas", "compare_guess",
           "check_initial_loss", "check_train_one_epoch", "check_evaluate", "check_dataset_class",
           "reference_dataset", "check_resnet_head", "check_parameter_groups", "check_lr_suggestion",
           "check_best_epoch", "reference_parameter_groups", "reference_best_epoch",
           "check_scores_from_confusion", "check_grad_cam", "check_threshold_for_sensitivity", "check_ppv",
           "use_yours_or", "INITIAL_LOSS"]
