"""skinlib.checks: every check passes the notebooks' own solutions and fails typical wrong answers
with its one-sentence message (never a traceback)."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skinlib import checks
from skinlib.data import CLASSES, load_index
from skinlib.models import SimpleCNN

SOURCES = Path(__file__).resolve().parent.parent / "tools" / "notebook_src"


def solution(notebook: str, name: str, namespace: dict | None = None):
    """The class or function `name` as the solution source of `notebook` writes it."""
    tree = ast.parse((SOURCES / f"{notebook}.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name)
    scope = {"torch": torch, "nn": nn, "F": F, "CLASSES": CLASSES, **(namespace or {})}
    exec(compile(ast.Module(body=[node], type_ignores=[]), f"{notebook}.py", "exec"), scope)
    return scope[name]


def said(capsys) -> str:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"a check prints one line, got: {out!r}"
    return out


# ------------------------------------------------------------------------------ SimpleCNN
class NoReluAfterConv1(SimpleCNN):
    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class NoReluAfterFc1(SimpleCNN):
    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        return self.fc3(F.relu(self.fc2(self.fc1(torch.flatten(x, 1)))))


class SoftmaxAtTheEnd(SimpleCNN):
    def forward(self, x):
        return super().forward(x).softmax(dim=1)


class WrongFc1(nn.Module):
    def __init__(self, num_classes=8):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 16, 5), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(32 * 54 * 54, 1200), nn.Linear(1200, 840), nn.Linear(840, num_classes)


class NoFc2(nn.Module):
    def __init__(self, num_classes=8):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 16, 5), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5)
        self.fc1, self.fc3 = nn.Linear(32 * 53 * 53, 840), nn.Linear(840, num_classes)


class FlattenWithoutBatch(SimpleCNN):  # torch.flatten(x) instead of torch.flatten(x, 1)
    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x))))))


class ReturnForgotten(SimpleCNN):
    def forward(self, x):
        self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(self.pool(F.relu(self.conv2(
            self.pool(F.relu(self.conv1(x)))))), 1))))))


class PaddedConvs(SimpleCNN):  # padding=2 keeps 224 at 224: a fault of __init__, not of forward
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 5, padding=2), nn.Conv2d(16, 32, 5, padding=2)


class Kernel3(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.conv1 = nn.Conv2d(3, 16, 3)


class Conv2Stride2(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.conv2 = nn.Conv2d(16, 32, 5, stride=2)


class AveragePool(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.pool = nn.AvgPool2d(2)


class Conv2With64Channels(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.conv2 = nn.Conv2d(16, 64, 5)


class NotWritten(nn.Module):
    def __init__(self, num_classes=8):
        raise NotImplementedError("conv1, ...")


def test_the_notebook_solution_of_simple_cnn_passes(capsys):
    answer = solution("01_simple_cnn", "SimpleCNN", {"FC1_INPUTS": 32 * 53 * 53})
    assert checks.check_simple_cnn(answer) is True
    assert said(capsys).startswith("✓ SimpleCNN: output (2, 8), 108,896,416 parameters")


@pytest.mark.parametrize("wrong, message", [
    (NoReluAfterConv1, "self.conv2 receives other values than it should (a ReLU is missing)"),
    (NoReluAfterFc1, "self.fc2 receives other values than it should (a ReLU is missing)"),
    (SoftmaxAtTheEnd, "is not fc3's logits"),
    (WrongFc1, "fc1's weight has shape (1200, 93312), not (1200, 89888)"),
    (NoFc2, "__init__ defines no fc2"),
    (FlattenWithoutBatch, "self.fc1 receives shape (179776,), not (2, 89888): the flatten must keep the batch "
                          "dimension: torch.flatten(x, 1)"),
    (ReturnForgotten, "forward returned None: end it with `return self.fc3(x)`"),
    (PaddedConvs, "self.conv1 is an nn.Conv2d with padding=(2, 2), not (0, 0): look at conv1 in __init__"),
    (Kernel3, "self.conv1 is an nn.Conv2d with kernel_size=(3, 3), not (5, 5): look at conv1 in __init__"),
    (Conv2Stride2, "self.conv2 is an nn.Conv2d with stride=(2, 2), not (1, 1): look at conv2 in __init__"),
    (AveragePool, "self.pool is an AvgPool2d, not an nn.MaxPool2d: look at pool in __init__"),
], ids=lambda v: getattr(v, "__name__", "")[:20])
def test_simple_cnn_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_simple_cnn(wrong) is False
    assert message in said(capsys)


def test_only_fc1s_wrong_shape_points_to_the_input_size_computed_above(capsys):
    assert checks.check_simple_cnn(WrongFc1) is False
    assert "look at fc1 in __init__ (its input size, computed above)" in said(capsys)
    assert checks.check_simple_cnn(Conv2With64Channels) is False
    message = said(capsys)
    assert "conv2's weight has shape (64, 16, 5, 5), not (32, 16, 5, 5): look at conv2 in __init__." in message
    assert "computed above" not in message


def test_simple_cnn_built_before_exercise_1_says_to_do_it_first(capsys):
    answer = solution("01_simple_cnn", "SimpleCNN", {"FC1_INPUTS": None})  # Exercise 1 skipped
    assert checks.check_simple_cnn(answer) is False
    assert "FC1_INPUTS is still None, so do Exercise 1 first" in said(capsys)


def test_an_exercise_not_written_yet_is_reported_not_raised(capsys):
    assert checks.check_simple_cnn(NotWritten) is False
    assert "not done yet" in said(capsys)


def test_fc1_inputs_left_at_none_says_what_to_replace(capsys):
    assert checks.check_fc1_inputs(None) is False
    printed = said(capsys)
    assert "fc1's input size: not done yet (FC1_INPUTS is still None" in printed
    assert "NotImplementedError" not in printed  # the student's cell raises nothing


@pytest.mark.parametrize("wrong", [32 * 54 * 54, 16 * 53 * 53])
def test_fc1_inputs_check(wrong, capsys):
    assert checks.check_fc1_inputs(32 * 53 * 53) is True
    assert checks.check_fc1_inputs(wrong) is False
    assert f"{wrong!r} is not the number of values that reach fc1" in capsys.readouterr().out


def test_use_yours_or_falls_back_on_the_reference_and_says_so(capsys):
    assert checks.use_yours_or(SimpleCNN, NotWritten, True, "SimpleCNN") is NotWritten
    assert checks.use_yours_or(SimpleCNN, NotWritten, False, "SimpleCNN") is SimpleCNN
    assert "skinlib's SimpleCNN" in said(capsys)


# ------------------------------------------------------------------------------ training loops
def loop_namespace() -> dict:
    from skinlib.engine import to_device_batch
    from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy

    return {"ConfusionMatrix": ConfusionMatrix, "accuracy": accuracy, "balanced_accuracy": balanced_accuracy,
            "to_device_batch": to_device_batch, "device": torch.device("cpu"), "MAX_BATCHES": None}


def no_zero_grad(model, loader, optimizer, criterion):
    model.train()
    for images, labels in loader:
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
    return {"loss": loss.item()}


def no_train_mode(model, loader, optimizer, criterion):
    for images, labels in loader:
        optimizer.zero_grad()
        criterion(model(images), labels).backward()
        optimizer.step()
    return {}


def no_step(model, loader, optimizer, criterion):
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        criterion(model(images), labels).backward()
    return {}


def no_backward(model, loader, optimizer, criterion):
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        criterion(model(images), labels)
        optimizer.step()
    return {}


def step_after_the_loop(model, loader, optimizer, criterion):
    model.train()
    for images, labels in loader:
        optimizer.zero_grad()
        criterion(model(images), labels).backward()
    optimizer.step()
    return {}


def zero_grad_between_backward_and_step(model, loader, optimizer, criterion):
    model.train()
    for images, labels in loader:
        criterion(model(images), labels).backward()
        optimizer.zero_grad()
        optimizer.step()
    return {}


def softmax_before_the_loss(model, loader, optimizer, criterion):  # nn.CrossEntropyLoss applies it again
    model.train()
    loss_sum, seen = 0.0, 0
    for images, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(images).softmax(dim=1), labels)
        loss.backward()
        optimizer.step()
        loss_sum, seen = loss_sum + loss.item() * len(labels), seen + len(labels)
    return {"loss": loss_sum / seen}


def test_the_notebook_solution_of_the_training_loop_passes(capsys):
    answer = solution("02_training_and_testing", "train_one_epoch_by_hand", loop_namespace())
    assert checks.check_train_one_epoch(answer) is True
    assert said(capsys).startswith("✓ train_one_epoch: zeroes gradients")


@pytest.mark.parametrize("wrong, message", [
    (no_zero_grad, "gradients pile up; call optimizer.zero_grad()"),
    (no_train_mode, "evaluation mode while training: call model.train()"),
    (no_step, "optimizer.step() is never called"),
    (no_backward, "optimizer.step() is called without a gradient: is loss.backward() missing"),
    (step_after_the_loop, "optimizer.step() ran 1 time for 2 batches: call it once per batch"),
    (zero_grad_between_backward_and_step, "although loss.backward() ran: is zero_grad() called between "
                                          "backward() and step()? Call it before backward()"),
    (softmax_before_the_loss, "is the cross-entropy of softmax(outputs), not of the logits (2.0451): "
                              "nn.CrossEntropyLoss applies softmax itself, so pass the raw outputs"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_training_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_train_one_epoch(wrong) is False
    assert message in said(capsys)


def eval_in_training_mode(model, loader, criterion):
    with torch.no_grad():
        outputs = torch.cat([model(images) for images, _ in loader])
    labels = torch.cat([labels for _, labels in loader])
    return {"loss": criterion(outputs, labels).item(), "accuracy": (outputs.argmax(1) == labels).float().mean().item()}


def eval_with_gradients(model, loader, criterion):
    model.eval()
    outputs = torch.cat([model(images) for images, _ in loader])
    labels = torch.cat([labels for _, labels in loader])
    return {"loss": criterion(outputs, labels).item(), "accuracy": (outputs.argmax(1) == labels).float().mean().item()}


def eval_mean_of_batch_means(model, loader, criterion):
    model.eval()
    with torch.no_grad():
        losses = [criterion(model(images), labels).item() for images, labels in loader]
        right = sum((model(images).argmax(1) == labels).sum().item() for images, labels in loader)
    return {"loss": sum(losses) / len(losses), "accuracy": right / sum(len(labels) for _, labels in loader)}


def eval_accuracy_in_percent(model, loader, criterion):
    model.eval()
    with torch.no_grad():
        outputs = torch.cat([model(images) for images, _ in loader])
    labels = torch.cat([labels for _, labels in loader])
    return {"loss": criterion(outputs, labels).item(), "accuracy": 100 * (outputs.argmax(1) == labels).float().mean().item()}


def eval_without_cm_update(model, loader, criterion):  # the template's return line divides by cm.total
    from skinlib.metrics import ConfusionMatrix, accuracy

    cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
    model.eval()
    with torch.no_grad():
        for images, labels in loader:
            loss_sum += criterion(model(images), labels).item() * len(labels)
    return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm)}


def test_the_notebook_solution_of_the_test_loop_passes(capsys):
    answer = solution("02_training_and_testing", "evaluate_by_hand", loop_namespace())
    assert checks.check_evaluate(answer) is True
    assert said(capsys).startswith("✓ evaluate:")


@pytest.mark.parametrize("wrong, message", [
    (eval_in_training_mode, "training mode while testing: call model.eval()"),
    (eval_with_gradients, "gradients were recorded while testing"),
    (eval_mean_of_batch_means, "weight each batch's mean loss by its size"),
    (eval_without_cm_update, "cm.total is 0 (a division by zero): call cm.update(...) for every batch"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_test_loop_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_evaluate(wrong) is False
    assert message in said(capsys)


def test_a_wrong_loss_and_a_wrong_accuracy_get_their_own_messages(capsys):
    assert checks.check_evaluate(eval_mean_of_batch_means) is False
    assert "accuracy" not in said(capsys)  # its accuracy is right: the message is about the loss alone
    assert checks.check_evaluate(eval_accuracy_in_percent) is False
    message = said(capsys)
    assert "it returned accuracy 18.75, a percentage: return the fraction 0.1875" in message
    assert "loss" not in message


def test_initial_loss_check(capsys):
    logits, labels = torch.zeros(16, 8), torch.arange(16) % 8
    assert checks.check_initial_loss(F.cross_entropy(logits, labels)) is True
    assert checks.check_initial_loss(F.cross_entropy(logits, labels, reduction="sum")) is False
    assert "summed over the batch instead of averaged" in capsys.readouterr().out
    assert checks.check_initial_loss(F.nll_loss(logits.softmax(1), labels)) is False
    assert f"far from ln 8 = {math.log(8):.2f}" in capsys.readouterr().out


# ------------------------------------------------------------------------------ Dataset
@pytest.fixture(scope="module")
def lesion_dataset():
    import pandas as pd
    from PIL import Image

    from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR

    return solution("02_training_and_testing", "LesionDataset",
                    {"Path": Path, "pd": pd, "Image": Image, "Dataset": torch.utils.data.Dataset,
                     "GROUND_TRUTH_CSV": GROUND_TRUTH_CSV, "IMAGES_DIR": IMAGES_DIR})


def wrong_datasets(right):
    from PIL import Image

    class NoTransform(right):
        def __getitem__(self, index):
            return Image.open(self.paths[index]).convert("RGB"), self.labels[index]

    class OffByOneLength(right):
        def __len__(self):
            return len(self.paths) - 1

    class ClassNameLabels(right):
        def __getitem__(self, index):
            image, label = super().__getitem__(index)
            return image, CLASSES[label]

    class FloatLabels(right):
        def __getitem__(self, index):
            image, label = super().__getitem__(index)
            return image, float(label)

    class LabelFirst(right):
        def __getitem__(self, index):
            image, label = super().__getitem__(index)
            return label, image

    return {"NoTransform": NoTransform, "OffByOneLength": OffByOneLength, "ClassNameLabels": ClassNameLabels,
            "FloatLabels": FloatLabels, "LabelFirst": LabelFirst}


def test_the_notebook_solution_of_the_dataset_passes(lesion_dataset, synthetic_dir, capsys):
    assert checks.check_dataset_class(lesion_dataset, synthetic_dir) is True
    assert said(capsys).startswith(f"✓ Dataset: {len(load_index(synthetic_dir))} items of (float (3, 224, 224), int)")


@pytest.mark.parametrize("as_label", [np.int64, torch.tensor], ids=["numpy", "tensor"])
def test_numpy_and_tensor_integer_labels_pass(as_label, lesion_dataset, synthetic_dir, capsys):
    # `argmax(axis=1)` without `.tolist()` gives numpy integers: the same labels, so the check accepts them
    class IntegerLabels(lesion_dataset):
        def __getitem__(self, index):
            image, label = super().__getitem__(index)
            return image, as_label(label)

    assert checks.check_dataset_class(IntegerLabels, synthetic_dir) is True, said(capsys)


def test_the_reference_dataset_passes_too(synthetic_dir, capsys):
    assert checks.check_dataset_class(checks.reference_dataset, synthetic_dir) is True


@pytest.mark.parametrize("wrong, message", [
    ("NoTransform", "the image is a PIL image, not a tensor: apply self.transform"),
    ("OffByOneLength", "len(dataset) is 159, but the CSV lists 160 images"),
    ("ClassNameLabels", "differ from the CSV's"),
    ("FloatLabels", "are floats: labels must be ints, the class index 0-7"),
    ("LabelFirst", "dataset[0] is a (label, image) pair: the order is wrong; __getitem__ must return (image, label)"),
])
def test_dataset_check_names_the_mistake(wrong, message, lesion_dataset, synthetic_dir, capsys):
    assert checks.check_dataset_class(wrong_datasets(lesion_dataset)[wrong], synthetic_dir) is False
    assert message in said(capsys)


# ------------------------------------------------------------------------------ ResNet-50 head
def head_with_1000_outputs(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(2048, 1000)
    return model


def backbone_left_trainable(model):
    model.fc = nn.Linear(2048, 8)
    return model


def head_frozen_too(model):
    model.fc = nn.Linear(2048, 8)
    return model.requires_grad_(False)


def head_not_returned(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(2048, 8)


def test_the_notebook_solution_of_the_head_passes(capsys):
    answer = solution("03_resnet50_transfer_learning", "replace_head_and_freeze")
    assert checks.check_resnet_head(answer) is True
    assert said(capsys).startswith("✓ ResNet-50 head: 2048 -> 8 head (16,392 parameters), backbone frozen")


def test_skinlib_new_head_passes_too(capsys):
    from skinlib.models import new_head

    assert checks.check_resnet_head(lambda model: new_head(model, 8, freeze_backbone=True)) is True
    assert checks.check_resnet_head(lambda model: new_head(model, 8), frozen=False) is True


@pytest.mark.parametrize("wrong, message", [
    (head_with_1000_outputs, "2048 features to 1000 outputs; it needs 2048 -> 8"),
    (backbone_left_trainable, "backbone parameters still learn"),
    (head_frozen_too, "the new head is frozen too"),
    (head_not_returned, "your function returned None: end it with `return model`"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_head_check_names_the_mistake(wrong, message, capsys):
    assert checks.check_resnet_head(wrong) is False
    assert message in said(capsys)
