"""The checks of notebooks 03, 04 and 05: each passes the notebook's own solution and right
variants of it, and names typical wrong answers in its one sentence (never a traceback)."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support
from torch import nn

from skinlib import checks
from skinlib.checks.decision import MEL, reference_threshold
from skinlib.checks.evaluation import reference_grad_cam, reference_scores
from skinlib.data import CLASSES

SOURCES = Path(__file__).resolve().parent.parent / "tools" / "notebook_src"
NOT_YET = NotImplementedError("the exercise above")


def solution(notebook: str, name: str):
    """The function `name` as the solution source of `notebook` writes it."""
    tree = ast.parse((SOURCES / f"{notebook}.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    scope = {"torch": torch, "nn": nn, "np": np, "math": math, "CLASSES": CLASSES, "MEL": MEL}
    exec(compile(ast.Module(body=[node], type_ignores=[]), f"{notebook}.py", "exec"), scope)
    return scope[name]


def said(capsys) -> str:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"a check prints one line, got: {out!r}"
    return out


def placeholder(*args, **kwargs):
    raise NOT_YET


# ============================================================================== notebook 03
# (the head's wrong answers are in tests/test_checks.py's catalogue; here, the placeholder)
def sequential_head(model):
    model.requires_grad_(False)
    model.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(2048, 8))
    return model


def test_a_sequential_head_with_dropout_passes(capsys):
    assert checks.check_resnet_head(sequential_head) is True
    assert said(capsys).startswith("✓ ResNet-50 head: 2048 -> 8 head (16,392 parameters), backbone frozen")


@pytest.mark.parametrize("wrong, message", [
    (placeholder, "… ResNet-50 head: not done yet"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_head_check_names_more_mistakes(wrong, message, capsys):
    assert checks.check_resnet_head(wrong) is False
    assert message in said(capsys)


@pytest.mark.parametrize("guess, sentence", [
    (None, "(write your guess for the trainable parameters in MY_GUESS, as a number such as 25_000"),
    (16392, "your guess for the trainable parameters: 16,392; measured: 16,392, 1 times the real value"),
    ("16,392", "your guess for the trainable parameters: 16,392; measured: 16,392"),
    ("100M", "your guess for the trainable parameters: 100,000,000; measured: 16,392, 6.1e+03 times"),
    ("16k", "your guess for the trainable parameters: 16,000; measured: 16,392, 0.98 times"),
    ("a lot", "MY_GUESS is a str ('a lot'), not a number: write a number, or text that reads as one"),
    (True, "MY_GUESS is a bool (True), not a number"),
])
def test_a_guess_typed_as_text_or_number_is_compared_without_crashing(guess, sentence, capsys):
    checks.compare_guess(guess, 16392, "the trainable parameters", "25_000")
    assert capsys.readouterr().out.startswith(sentence)


GROUPS = solution("03_resnet50_transfer_learning", "parameter_groups")


def one_group(model, lr, head_factor):
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]


def head_in_both(model, lr, head_factor):
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr},
            {"params": list(model.fc.parameters()), "lr": lr * head_factor}]


def frozen_included(model, lr, head_factor):
    return [{"params": [p for n, p in model.named_parameters() if not n.startswith("fc.")], "lr": lr},
            {"params": list(model.fc.parameters()), "lr": lr * head_factor}]


def factor_on_backbone(model, lr, head_factor):
    groups = GROUPS(model, lr, head_factor)
    groups[0]["lr"], groups[1]["lr"] = lr * head_factor, lr
    return groups


def head_forgotten(model, lr, head_factor):
    return [{"params": [p for n, p in model.named_parameters() if not n.startswith("fc.") and p.requires_grad],
             "lr": lr}]


@pytest.mark.parametrize("right", [GROUPS, checks.reference_parameter_groups], ids=["notebook", "skinlib"])
def test_parameter_groups_pass(right, capsys):
    assert checks.check_parameter_groups(right) is True
    assert said(capsys).startswith("✓ parameter groups: backbone at lr, head (model.fc) at 10 x lr")


@pytest.mark.parametrize("wrong, message", [
    (one_group, "the head learns at [0.001] and the backbone at [0.001]; with lr=0.001 and head_factor=10 "
                "they should be 0.01 and 0.001"),
    (head_in_both, "a parameter is in two groups"),
    (frozen_included, "a frozen parameter (requires_grad False) was given to the optimizer"),
    (factor_on_backbone, "the head learns at [0.001] and the backbone at [0.01]"),
    (head_forgotten, "2 trainable parameter tensor(s) are in no group"),
    (lambda model, lr, factor: None, "your function returned None: return a list of two dicts"),
    (placeholder, "… parameter groups: not done yet"),
], ids=["one group", "head in both", "frozen included", "factor on backbone", "head forgotten", "None",
        "placeholder"])
def test_parameter_groups_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_parameter_groups(wrong) is False
    assert message in said(capsys)


@pytest.mark.parametrize("right", [
    solution("03_resnet50_transfer_learning", "best_epoch"), checks.reference_best_epoch,
    lambda history: int(np.argmax([row["val_balanced_accuracy"] for row in history])) + 1,
], ids=["notebook", "skinlib", "argmax + 1"])
def test_best_epoch_passes(right, capsys):
    assert checks.check_best_epoch(right) is True
    assert said(capsys) == ("✓ best epoch: the epoch of the highest validation balanced accuracy, the earlier one "
                            "on a tie.\n")


@pytest.mark.parametrize("wrong, message", [
    (lambda h: int(np.argmax([r["val_balanced_accuracy"] for r in h])),
     "it returned 1, not 2: that is the row's position in the list; history's epochs count from 1"),
    (lambda h: min(h, key=lambda r: r["val_loss"])["epoch"], "the epoch of the lowest validation loss"),
    (lambda h: max(h, key=lambda r: r["val_accuracy"])["epoch"], "the epoch of the highest plain accuracy"),
    (lambda h: [r for r in h if r["val_balanced_accuracy"] >= max(x["val_balanced_accuracy"] for x in h)][-1]["epoch"],
     "on a tie keep the earlier epoch (compare with >, not >=)"),
    (lambda h: max(h, key=lambda r: r["val_balanced_accuracy"]), "your function returned a whole row"),
    (lambda h: len(h) + 1, "it returned 6, not 2."),
    (lambda h: [r for r in h if r["val_balanced_accuracy"] == max(x["val_balanced_accuracy"] for x in h)],
     "your function returned a list; return one epoch number, the best row's 'epoch'"),
], ids=["position", "lowest loss", "plain accuracy", "last of a tie", "row", "beyond the end", "a list"])
def test_best_epoch_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_best_epoch(wrong) is False
    assert message in said(capsys)


# ============================================================================== notebook 04
SCORES = solution("04_evaluation_and_interpretation", "scores_from_confusion")


def scores_zero_when_undefined(cm):
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(len(cm)), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(len(cm)), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(cm)), where=precision + recall > 0)
    return {"precision": precision, "recall": recall, "f1": f1,
            "balanced_accuracy": recall[cm.sum(1) > 0].mean()}


def scores_with_torch(cm):
    cm = torch.as_tensor(cm, dtype=torch.float64)
    tp = cm.diag()
    precision, recall = tp / cm.sum(0), tp / cm.sum(1)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall),
            "balanced_accuracy": recall.nanmean()}


def with_changes(**changes):
    def answer(cm):
        scores = SCORES(cm)
        cm = np.asarray(cm, dtype=float)
        recall = scores["recall"]
        new = {"swap": {"precision": scores["recall"], "recall": scores["precision"]},
               "accuracy": {"balanced_accuracy": np.trace(cm) / cm.sum()},
               "mean": {"balanced_accuracy": np.mean(recall)},
               "zeros": {"balanced_accuracy": np.nan_to_num(recall).mean()},
               "arithmetic": {"f1": (scores["precision"] + scores["recall"]) / 2},
               "percent": {k: 100 * scores[k] for k in ("precision", "recall", "f1")}}
        return {**scores, **new[changes["kind"]]}
    return answer


@pytest.mark.parametrize("right", [SCORES, scores_zero_when_undefined, scores_with_torch, reference_scores],
                         ids=["notebook", "zeros where undefined", "torch", "skinlib"])
def test_scores_from_confusion_pass(right, capsys):
    assert checks.check_scores_from_confusion(right) is True
    assert said(capsys).startswith("✓ scores from the confusion matrix: precision, recall and F1 of every class")


@pytest.mark.parametrize("kind, message", [
    ("swap", "your recall divides the diagonal by the column sums: that is precision"),
    ("accuracy", "your balanced accuracy is plain accuracy"),
    ("mean", "balanced accuracy is NaN: a class without test images has no recall"),
    ("zeros", "counts a class without test images as recall 0"),
    ("arithmetic", "your F1 is the arithmetic mean of precision and recall"),
    ("percent", "your scores go above 1: give shares between 0 and 1, not percentages"),
])
def test_scores_check_names_the_mistake(kind, message, capsys):
    assert checks.check_scores_from_confusion(with_changes(kind=kind)) is False
    assert message in said(capsys)


def test_scores_check_wants_a_dict_and_says_not_yet(capsys):
    assert checks.check_scores_from_confusion(lambda cm: (1, 2)) is False
    assert "your function returned tuple; return a dict with the keys precision, recall, f1" in said(capsys)
    assert checks.check_scores_from_confusion(placeholder) is False
    assert "… scores from the confusion matrix: not done yet" in said(capsys)


def test_reference_scores_equal_scikit_learn_on_labels():
    rng = np.random.default_rng(0)
    truth, guess = rng.integers(0, 8, 200), rng.integers(0, 8, 200)
    from sklearn.metrics import confusion_matrix
    mine = reference_scores(confusion_matrix(truth, guess, labels=range(8)))
    p, r, f, _ = precision_recall_fscore_support(truth, guess, labels=range(8), zero_division=np.nan)
    assert np.allclose(mine["precision"], p) and np.allclose(mine["recall"], r) and np.allclose(mine["f1"], f)
    assert mine["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, guess))


CAM = solution("04_evaluation_and_interpretation", "my_grad_cam")


def cam_with_tensor_hook(model, images, target, layer):
    saved = {}

    def keep(module, inputs, output):
        saved["a"] = output
        output.register_hook(lambda grad: saved.update(g=grad))
    handle = layer.register_forward_hook(keep)
    try:
        model(images).gather(1, target[:, None]).sum().backward()
    finally:
        handle.remove()
    return torch.relu((saved["g"].mean(dim=(2, 3), keepdim=True) * saved["a"]).sum(1)).detach()


def cam_variant(kind):
    def answer(model, images, target, layer):
        saved = {}
        handles = [layer.register_forward_hook(lambda m, i, o: saved.update(a=o)),
                   layer.register_full_backward_hook(lambda m, gi, go: saved.update(g=go[0]))]
        logits = model(images)
        score = {"predicted": logits.gather(1, logits.argmax(1)[:, None]).sum(), "all": logits.sum()}.get(
            kind, logits.gather(1, target[:, None]).sum())
        score.backward()
        if kind != "hooks left":
            for handle in handles:
                handle.remove()
        reduce = (lambda g: g.sum(dim=(2, 3), keepdim=True)) if kind == "sum" else \
            (lambda g: g.mean(dim=(2, 3), keepdim=True))
        cam = (reduce(saved["g"]) * saved["a"]).sum(1)
        cam = cam if kind == "no relu" else torch.relu(cam)
        if kind == "keepdim":
            return cam[:, None].detach()
        return (cam.detach(), logits) if kind == "tuple" else cam.detach()
    return answer


@pytest.mark.parametrize("right", [CAM, cam_with_tensor_hook, reference_grad_cam],
                         ids=["notebook", "tensor hook", "skinlib"])
def test_grad_cam_passes(right, capsys):
    assert checks.check_grad_cam(right) is True
    assert said(capsys) == ("✓ Grad-CAM: your hooks give captum's LayerGradCam maps, and are removed "
                            "afterwards.\n")


@pytest.mark.parametrize("kind, message", [
    ("no relu", "your maps have negative values: apply ReLU to the weighted sum"),
    ("sum", "your maps are 36 times captum's: average the gradients over the positions"),
    ("predicted", "your maps are for the predicted class, not for `target`"),
    ("all", "your gradient is of the sum of every class score"),
    ("hooks left", "your hooks are still on the layer after the function returned"),
    ("tuple", "your function returned a tuple; return the maps only"),
    ("keepdim", "your maps have shape (3, 1, 6, 6); for 3 images and a layer of 6x6 maps they should be (3, 6, 6)"),
])
def test_grad_cam_check_names_the_mistake(kind, message, capsys):
    assert checks.check_grad_cam(cam_variant(kind)) is False
    assert message in said(capsys)


def test_grad_cam_check_says_not_yet_for_the_placeholder(capsys):
    assert checks.check_grad_cam(placeholder) is False
    assert "… Grad-CAM: not done yet" in said(capsys)


def test_the_notebook_grad_cam_works_on_resnet50s_layer4():
    from torchvision.models import resnet50

    from skinlib.gradcam import grad_cam
    model = resnet50(num_classes=8).eval()
    images, target = torch.randn(2, 3, 64, 64), torch.tensor([3, 5])
    assert torch.allclose(CAM(model, images, target, model.layer4), grad_cam(model, images, target)[0],
                          rtol=1e-4, atol=1e-7)


# ============================================================================== notebook 05
THRESHOLD = solution("05_try_the_model", "threshold_for_sensitivity")


def threshold_a_little_lower(targets, mel_probs, sensitivity):
    """Right too: just under the reference refers the same lesions when no P(MEL) lies in between."""
    right = reference_threshold(targets, mel_probs, sensitivity)
    below = np.asarray(mel_probs)[np.asarray(mel_probs) < right]
    return (right + below.max()) / 2 if len(below) else right


def threshold_rounded_down(targets, mel_probs, sensitivity):
    mel = np.sort(np.asarray(mel_probs)[np.asarray(targets) == MEL])[::-1]
    return float(mel[max(1, math.floor(sensitivity * len(mel))) - 1])


@pytest.mark.parametrize("right", [THRESHOLD, reference_threshold, threshold_a_little_lower],
                         ids=["notebook", "skinlib", "just below"])
def test_threshold_for_sensitivity_passes(right, capsys):
    assert checks.check_threshold_for_sensitivity(right) is True
    assert said(capsys).startswith("✓ threshold for a sensitivity: the highest threshold that reaches the target")


@pytest.mark.parametrize("wrong, message", [
    (threshold_rounded_down, "which refers 3 of them (43%): too high"),
    (lambda t, p, s: 0.0, "is higher and reaches the target too (18 false alarms against your 40)"),
    (lambda t, p, s: float(np.quantile(p, 1 - s)), "your threshold is"),
    (lambda t, p, s: s, "for a target of 95% on 20 melanomas your threshold is 0.950, which refers"),
    (lambda t, p, s: None, "your function returned None: return the threshold (a number)"),
    (placeholder, "… threshold for a sensitivity: not done yet"),
], ids=["rounded down", "zero", "quantile of all", "the sensitivity", "None", "placeholder"])
def test_threshold_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_threshold_for_sensitivity(wrong) is False
    assert message in said(capsys)


PPV = solution("05_try_the_model", "ppv")


@pytest.mark.parametrize("right", [PPV, checks.decision.ppv_at_prevalence,
                                   lambda se, sp, pr: 1 / (1 + (1 - sp) * (1 - pr) / (se * pr))],
                         ids=["notebook", "skinlib", "odds form"])
def test_ppv_passes(right, capsys):
    assert checks.check_ppv(right) is True
    assert said(capsys).startswith("✓ positive predictive value: Bayes' rule")


@pytest.mark.parametrize("wrong, message", [
    (lambda se, sp, pr: se, "that is the sensitivity, P(positive | melanoma)"),
    (lambda se, sp, pr: se * pr / (se * pr + sp * (1 - pr)), "not the specificity share"),
    (lambda se, sp, pr: se * pr / (se * pr + (1 - sp)), "(1 - specificity) x (1 - prevalence)"),
    (lambda se, sp, pr: sp * (1 - pr) / (sp * (1 - pr) + (1 - se) * pr), "that is the negative predictive value"),
    (lambda se, sp, pr: 100 * PPV(se, sp, pr), "(as a percentage): give a share between 0 and 1"),
    (lambda se, sp, pr: se * pr, "PPV = sensitivity x prevalence / (sensitivity x prevalence"),
    (placeholder, "… positive predictive value: not done yet"),
], ids=["sensitivity", "specificity share", "prevalence forgotten", "npv", "percent", "numerator only",
        "placeholder"])
def test_ppv_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_ppv(wrong) is False
    assert message in said(capsys)


def test_an_error_in_the_students_code_is_one_sentence_not_a_traceback(capsys):
    assert checks.check_ppv(lambda se, sp, pr: se / 0) is False
    assert "✗ positive predictive value: your function raised ZeroDivisionError: float division by zero" in said(capsys)


# ============================================================================== the notebooks
LESSONS = {"03_resnet50_transfer_learning": 4, "04_evaluation_and_interpretation": 2, "05_try_the_model": 2}


@pytest.mark.parametrize("name, count", LESSONS.items())
def test_each_exercise_is_followed_by_its_check_cell(name, count):
    import jupytext
    cells = jupytext.reads((SOURCES / f"{name}.py").read_text(encoding="utf-8"), fmt="py:percent").cells
    exercises = [i for i, cell in enumerate(cells) if "### BEGIN SOLUTION" in cell.source]
    assert len(exercises) == count
    for i in exercises:
        check = cells[i + 1]
        assert check.cell_type == "code" and "passed = check_" in check.source and "use_yours_or(" in check.source


@pytest.mark.parametrize("name", LESSONS)
def test_each_notebook_states_its_study_time(name):
    assert "**Study time:**" in (SOURCES / f"{name}.py").read_text(encoding="utf-8")


SUGGEST = solution("03_resnet50_transfer_learning", "suggest_lr")


def test_the_notebooks_lr_suggestion_passes(capsys):
    assert checks.check_lr_suggestion(SUGGEST) is True
    assert said(capsys) == "✓ suggested learning rate: a tenth of the rate of the lowest loss (fastai's minimum / 10).\n"


@pytest.mark.parametrize("wrong, message", [
    (lambda r: r["lr"][int(np.argmin(r["loss"]))], "you return the rate of the lowest loss"),
    (lambda r: min(r["loss"]), "you return the lowest loss, not a learning rate"),
    (lambda r: int(np.argmin(r["loss"])), "you return a position in the list, not a learning rate"),
    (lambda r: r["lr"][-1] / 10, "you use the last rate of the test, where the loss blew up"),
    (lambda r: r["lr"][0], "you suggest 1.00e-06; the rate of the lowest loss is 1.47e-02, and a tenth of it 1.47e-03"),
    (placeholder, "… suggested learning rate: not done yet"),
], ids=["rate at minimum", "loss", "position", "last rate", "first rate", "placeholder"])
def test_lr_suggestion_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_lr_suggestion(wrong) is False
    assert message in said(capsys)


# ============================================================================== more students' mistakes
def head_ending_in_softmax(model):
    model.requires_grad_(False)
    model.fc = nn.Sequential(nn.Linear(2048, 8), nn.Softmax(dim=1))
    return model


def test_a_head_ending_in_softmax_is_named(capsys):
    assert checks.check_resnet_head(head_ending_in_softmax) is False
    assert "your head ends in a Softmax: it must give the raw class scores (logits)" in said(capsys)


def groups_without_lr(model, lr, head_factor):
    return [{"params": g["params"], "learning_rate": g["lr"]} for g in GROUPS(model, lr, head_factor)]


def groups_of_names(model, lr, head_factor):
    return [{"params": [n for n, p in model.named_parameters() if not n.startswith("fc.") and p.requires_grad],
             "lr": lr}, {"params": [n for n, _ in model.fc.named_parameters()], "lr": lr * head_factor}]


@pytest.mark.parametrize("wrong, message", [
    (groups_without_lr, "a group has no 'lr' key"),
    (groups_of_names, "a group's 'params' holds something else than parameter tensors (their names?)"),
], ids=["no lr key", "names"])
def test_parameter_groups_check_names_more_mistakes(wrong, message, capsys):
    assert checks.check_parameter_groups(wrong) is False
    assert message in said(capsys)


def steepest_slope(result):
    losses = result["loss"]
    return result["lr"][int(np.argmin(np.diff(losses))) + 1]


@pytest.mark.parametrize("wrong, message", [
    (steepest_slope, "you return the rate where the loss falls fastest (fastai's other suggestion"),
    (lambda r: f"{r['lr'][int(np.argmin(r['loss']))] / 10:.1e}", "your function returned a str ('1.5e-03')"),
    (lambda r: (r["lr"][int(np.argmin(r["loss"]))] / 10, min(r["loss"])), "your function returned a tuple"),
], ids=["steepest slope", "text", "tuple"])
def test_lr_suggestion_check_names_more_mistakes(wrong, message, capsys):
    assert checks.check_lr_suggestion(wrong) is False
    assert message in said(capsys)


@pytest.mark.parametrize("wrong, message", [
    (lambda h: h[-1]["epoch"], "that is the last epoch, where the training score is highest"),
    (lambda h: max(h, key=lambda r: r["train_balanced_accuracy"])["epoch"], "that is the last epoch"),
    (lambda h: max(r["val_balanced_accuracy"] for r in h), "it returned 0.55, not 2: that is the best score itself"),
], ids=["last epoch", "training score", "the score"])
def test_best_epoch_check_names_more_mistakes(wrong, message, capsys):
    assert checks.check_best_epoch(wrong) is False
    assert message in said(capsys)


def scores_by_python_division(cm):
    precision = np.array([cm[i, i] / int(cm[:, i].sum()) for i in range(len(cm))])  # int / 0: ZeroDivisionError
    recall = np.array([int(cm[i, i]) / int(cm[i].sum()) for i in range(len(cm))])
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / (precision + recall),
            "balanced_accuracy": np.nanmean(recall)}


def scores_key_misspelt(cm):
    scores = SCORES(cm)
    scores["F1"] = scores.pop("f1")
    return scores


def scores_mean_precision(cm):
    scores = SCORES(cm)
    return {**scores, "balanced_accuracy": np.nanmean(scores["precision"])}


@pytest.mark.parametrize("wrong, message", [
    (scores_by_python_division, "your function divided by zero: a class never predicted has no precision"),
    (scores_key_misspelt, "your dict has no key 'f1' (it has 'precision', 'recall', 'balanced_accuracy', 'F1')"),
    (scores_mean_precision, "your balanced accuracy is the mean precision"),
], ids=["0/0 as an error", "key spelt F1", "mean precision"])
def test_scores_check_names_more_mistakes(wrong, message, capsys):
    with np.errstate(divide="ignore", invalid="ignore"):
        assert checks.check_scores_from_confusion(wrong) is False
    assert message in said(capsys)


def cam_hooked(where, gradient_at="output", scale=False, upsample=False, detach=True):
    def answer(model, images, target, layer):
        hooked = {"layer": layer, "model": model}[where]
        saved = {}
        handles = [hooked.register_forward_hook(lambda m, i, o: saved.update(a=o)),
                   hooked.register_full_backward_hook(
                       lambda m, gi, go: saved.update(g=(go if gradient_at == "output" else gi)[0]))]
        try:
            model(images).gather(1, target[:, None]).sum().backward()
        finally:
            for handle in handles:
                handle.remove()
        cam = torch.relu((saved["g"].mean(dim=(2, 3), keepdim=True) * saved["a"]).sum(1))
        if scale:
            cam = cam / cam.amax(dim=(1, 2), keepdim=True)
        if upsample:
            cam = nn.functional.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
        return cam.detach() if detach else cam
    return answer


@pytest.mark.parametrize("wrong, message", [
    (cam_hooked("layer", gradient_at="input"), "in the backward hook take grad_outputs[0]"),
    (cam_hooked("model"), "put both hooks on `layer`, the function's argument, not on the model"),
    (cam_hooked("layer", upsample=True), "your maps have the image's size (12, 12): return the layer's maps"),
    (cam_hooked("layer", scale=True), "your maps are scaled to a maximum of 1: return them unscaled"),
], ids=["grad_inputs", "hooks on the model", "upsampled", "scaled"])
def test_grad_cam_check_names_more_mistakes(wrong, message, capsys):
    assert checks.check_grad_cam(wrong) is False
    assert message in said(capsys)


def test_grad_cam_maps_not_detached_pass_with_a_tip(capsys):
    assert checks.check_grad_cam(cam_hooked("layer", detach=False)) is True
    assert "(Tip: return maps.detach(): yours still hold the graph" in said(capsys)


@pytest.mark.parametrize("wrong, message", [
    (lambda t, p, s: math.ceil(s * (np.asarray(t) == MEL).sum()),
     "your threshold is 19.000: a threshold on a probability lies between 0 and 1"),
    (lambda t, p, s: float(np.min(np.asarray(p)[np.asarray(t) == MEL])),
     "0.466 is higher and reaches the target too (the same 18 false alarms on this probe"),
    (lambda t, p, s: f"{THRESHOLD(t, p, s):.2f}", "your function returned a str"),
], ids=["a count", "the lowest melanoma", "text"])
def test_threshold_check_names_more_mistakes(wrong, message, capsys):
    assert checks.check_threshold_for_sensitivity(wrong) is False
    assert message in said(capsys)


def test_ppv_as_text_is_named(capsys):
    assert checks.check_ppv(lambda se, sp, pr: f"{PPV(se, sp, pr):.1%}") is False
    assert "your function returned a str ('4.3%'): return one number" in said(capsys)


@pytest.mark.parametrize("value, used, note", [
    (0.95, 0.95, ""), (1, 1.0, ""), (95, 0.95, "TARGET_SENSITIVITY = 95 reads as a percentage: using 0.95"),
    ("95%", 0.9, "is not a number: using 0.9"), (0, 0.9, "is not a share between 0 and 1: using 0.9"),
])
def test_a_share_typed_as_a_percentage_is_read_with_a_note(value, used, note, capsys):
    from skinlib.checks.decision import as_share
    assert as_share(value, "TARGET_SENSITIVITY", 0.9) == pytest.approx(used)
    assert note in capsys.readouterr().out


def test_a_prevalence_of_1_reads_as_one_percent(capsys):
    from skinlib.checks.decision import as_share
    assert as_share(1, "PREVALENCE", 0.01, whole=False) == pytest.approx(0.01)
    assert "PREVALENCE = 1 reads as a percentage: using 0.01" in capsys.readouterr().out
    assert as_share(0.18, "PREVALENCE", 0.01, whole=False) == pytest.approx(0.18)


def test_grad_cam_on_a_layer_named_inside_the_function_is_named(capsys):
    assert checks.check_grad_cam(lambda model, images, target, layer: CAM(model, images, target, model.layer4)) is False
    assert "hook the `layer` your function is given, not one named in it" in said(capsys)
