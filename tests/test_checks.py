"""skinlib.checks: every check passes the notebooks' own solutions and right variants, and fails a
catalogue of typical wrong answers with its one-sentence message (never a traceback, never "not
done yet" for written code). Each catalogue case is one test id: notebook-exercise-mistake."""
from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skinlib import checks
from skinlib.data import CLASSES, load_index
from skinlib.engine import to_device_batch
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy
from skinlib.models import SimpleCNN

SOURCES = Path(__file__).resolve().parent.parent / "tools" / "notebook_src"
device = torch.device("cpu")  # the notebooks' global, read by the loops below


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


def loop_namespace() -> dict:
    return {"ConfusionMatrix": ConfusionMatrix, "accuracy": accuracy, "balanced_accuracy": balanced_accuracy,
            "to_device_batch": to_device_batch, "device": device, "MAX_BATCHES": None}


# ============================================================================== 01: SimpleCNN
class NoReluAfterConv1(SimpleCNN):
    def forward(self, x):
        x = self.pool(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class NoReluAfterFc1(SimpleCNN):
    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        return self.fc3(F.relu(self.fc2(self.fc1(torch.flatten(x, 1)))))


class SigmoidInsteadOfRelu(SimpleCNN):
    def forward(self, x):
        x = self.pool(torch.sigmoid(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class SoftmaxAtTheEnd(SimpleCNN):
    def forward(self, x):
        return super().forward(x).softmax(dim=1)


class ReluAfterFc3(SimpleCNN):
    def forward(self, x):
        return F.relu(super().forward(x))


class FirstPoolForgotten(SimpleCNN):
    def forward(self, x):
        x = self.pool(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class SecondPoolForgotten(SimpleCNN):
    def forward(self, x):
        x = F.relu(self.conv2(self.pool(F.relu(self.conv1(x)))))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class ConvsInTheWrongOrder(SimpleCNN):
    def forward(self, x):
        x = self.pool(F.relu(self.conv1(self.pool(F.relu(self.conv2(x))))))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


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


class ForwardMisspelled(nn.Module):  # PyTorch raises NotImplementedError: no forward
    def __init__(self, num_classes=8):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 16, 5), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(32 * 53 * 53, 1200), nn.Linear(1200, 840), nn.Linear(840, num_classes)

    def foward(self, x):
        return x


class SuperInitForgotten(nn.Module):
    def __init__(self, num_classes=8):
        self.conv1 = nn.Conv2d(3, 16, 5)


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


class PoolStride1(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.pool = nn.MaxPool2d(2, stride=1)


class AveragePool(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.pool = nn.AvgPool2d(2)


class Conv2With64Channels(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.conv2 = nn.Conv2d(16, 64, 5)


class Conv2FromTheImage(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.conv2 = nn.Conv2d(3, 32, 5)


class Fc1WithoutBias(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.fc1 = nn.Linear(32 * 53 * 53, 1200, bias=False)


class NumClassesIgnored(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.fc3 = nn.Linear(840, 10)


class ReluLayerCalledOnTheTensor(SimpleCNN):  # nn.ReLU(x) builds a layer, it does not apply one
    def forward(self, x):
        x = self.pool(nn.ReLU(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class FlattenLayerCalledOnTheTensor(SimpleCNN):
    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(nn.Flatten(x))))))


class SelfForgotten(SimpleCNN):
    def forward(self, x):
        x = self.pool(F.relu(conv1(x)))  # noqa: F821 (the mistake: conv1 is self.conv1)
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class BatchNormAdded(SimpleCNN):  # a layer with weights the table does not have
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.bn1 = nn.BatchNorm2d(16)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))))


class Fc1OfAFloatSize(SimpleCNN):  # FC1_INPUTS computed with `/`: nn.Linear refuses 89888.0
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.fc1 = nn.Linear(32 * (((224 - 4) / 2 - 4) / 2) ** 2, 1200)


# Right variants: other spellings of the same network
class FunctionalPool(nn.Module):
    def __init__(self, num_classes=8):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 16, 5, padding="valid"), nn.Conv2d(16, 32, (5, 5))
        self.fc1, self.fc2, self.fc3 = nn.Linear(32 * 53 * 53, 1200), nn.Linear(1200, 840), nn.Linear(840, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), (2, 2))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))))


class ReluModulesAndFlattenModule(SimpleCNN):
    def __init__(self, num_classes=8):
        super().__init__(num_classes)
        self.relu, self.flatten = nn.ReLU(), nn.Flatten()

    def forward(self, x):
        x = self.pool(self.relu(self.conv2(self.pool(self.relu(self.conv1(x))))))
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(self.flatten(x))))))


SIMPLE_CNN_WRONG = [
    (NoReluAfterConv1, "self.conv2 receives other values than it should (a ReLU is missing)"),
    (NoReluAfterFc1, "self.fc2 receives other values than it should (a ReLU is missing)"),
    (SigmoidInsteadOfRelu, "self.conv2 receives other values than it should (a step differs)"),
    (SoftmaxAtTheEnd, "is not fc3's logits"),
    (ReluAfterFc3, "with no ReLU or softmax after it"),
    (FirstPoolForgotten, "self.conv2 receives shape (2, 16, 220, 220), not (2, 16, 110, 110): look at the steps "
                         "before conv2"),
    (SecondPoolForgotten, "self.fc1 receives shape (2, 359552), not (2, 89888)"),
    (ConvsInTheWrongOrder, "forward raised RuntimeError"),
    (WrongFc1, "fc1's weight has shape (1200, 93312), not (1200, 89888)"),
    (NoFc2, "__init__ defines no fc2"),
    (FlattenWithoutBatch, "self.fc1 receives shape (179776,), not (2, 89888): the flatten must keep the batch "
                          "dimension: torch.flatten(x, 1)"),
    (ReturnForgotten, "forward returned None: end it with `return self.fc3(x)`"),
    (ForwardMisspelled, "PyTorch finds no forward method: is `def forward(self, x):` spelled so"),
    (SuperInitForgotten, "call super().__init__() first in __init__"),
    (PaddedConvs, "self.conv1 is an nn.Conv2d with padding=(2, 2), not (0, 0): look at conv1 in __init__"),
    (Kernel3, "self.conv1 is an nn.Conv2d with kernel_size=(3, 3), not (5, 5): look at conv1 in __init__"),
    (Conv2Stride2, "self.conv2 is an nn.Conv2d with stride=(2, 2), not (1, 1): look at conv2 in __init__"),
    (PoolStride1, "self.pool is an nn.MaxPool2d with stride=(1, 1), not (2, 2)"),
    (AveragePool, "self.pool is an AvgPool2d, not an nn.MaxPool2d: look at pool in __init__"),
    (Conv2With64Channels, "conv2's weight has shape (64, 16, 5, 5), not (32, 16, 5, 5): look at conv2 in __init__."),
    (Conv2FromTheImage, "conv2's weight has shape (32, 3, 5, 5), not (32, 16, 5, 5)"),
    (Fc1WithoutBias, "fc1 has no bias (bias=False?): the table's layers all have one"),
    (ReluLayerCalledOnTheTensor, "must be Tensor, not ReLU: nn.ReLU(x) builds a layer instead of applying one"),
    (FlattenLayerCalledOnTheTensor, "must be Tensor, not Flatten: nn.ReLU(x) builds a layer instead of applying one"),
    (SelfForgotten, "name 'conv1' is not defined: the layers made in __init__ are attributes of the network"),
    (BatchNormAdded, "__init__ also makes bn1, a layer with weights the table does not list"),
    (Fc1OfAFloatSize, "a layer was given a float as its size (FC1_INPUTS computed with `/`?)"),
    (NumClassesIgnored, "fc3's weight has shape (10, 840), not (8, 840)"),
]

FC1_WRONG = [
    (32 * 52 * 52, "takes 4 pixels off a side (n - 5 + 1), not 5"),
    (16 * 53 * 53, "conv2 gives 32 channels; 16 are conv1's"),
    (32 * 53, "the 32 maps are 53 x 53"),
    (53 * 53, "there are 32 such maps"),
    (32 * 106 * 106, "the second max-pool halves the side once more"),
    (32 * 55 * 55, "conv2 also takes 4 pixels off a side"),
    (1200, "1200 is not the number of values that reach fc1: follow one side from 224"),
    ("32 * 53 * 53", "FC1_INPUTS is a str ('32 * 53 * 53'), not a number: write the expression without quotes"),
    (32 * (((224 - 4) / 2 - 4) / 2) ** 2, "89888.0 is the right count, but a float (`/` always gives one), and "
                                           "nn.Linear takes an int: halve with //"),
    (torch.tensor(32 * 53 * 53), "FC1_INPUTS is a Tensor (tensor(89888)), not a number: write it with plain numbers"),
]


def conv_parameters(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def linear_parameters(n_in, n_out):
    return n_in * n_out + n_out


FORMULAS_WRONG = [
    ((lambda c_in, c_out, k: c_out * c_in * k * k), linear_parameters, "each filter also has a bias"),
    ((lambda c_in, c_out, k: c_out * c_in * k * k + c_in), linear_parameters, "one bias per output channel (filter)"),
    ((lambda c_in, c_out, k: c_out * k * k + c_out), linear_parameters, "a filter spans every input channel"),
    ((lambda c_in, c_out, k: c_out * c_in * k + c_out), linear_parameters, "a filter is k x k: square the kernel"),
    (conv_parameters, (lambda n_in, n_out: n_in * n_out), "each of the n_out units also has a bias"),
    (conv_parameters, (lambda n_in, n_out: n_in * n_out + n_in), "one number per output, not per input"),
    ((lambda c_in, c_out, k: None), linear_parameters, "conv_parameters(3, 16, 5) returned None: end the function"),
    (conv_parameters, (lambda n_in, n_out: f"{n_in * n_out + n_out}"), "linear_parameters(89888, 1200) returned a str"),
]

GUESSES_WRONG = [("a lot", "MY_GUESS is a str ('a lot'), not a number: write a number, or text that reads as one "
                           "such as \"100M\""),
                 ("100 M params", "MY_GUESS is a str ('100 M params'), not a number"),
                 ([1e8], "MY_GUESS is a list ([100000000.0]), not a number"),
                 ((100, 0, 0), "MY_GUESS is a tuple ((100, 0, 0)), not a number: a comma separates values in "
                               "Python: write the number without commas"),  # MY_GUESS = 100,000,000
                 (float("nan"), "MY_GUESS is a float (nan), not a number")]


# ============================================================================== 02: the training loop
def train_loop(step):
    """A training loop with the template's lines around `step(model, images, labels, optimizer, criterion)`,
    which returns the batch's outputs and loss: each wrong answer below changes that one part."""
    def train_one_epoch(model, loader, optimizer, criterion):
        model.train()
        cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
        for images, labels in loader:
            images, labels = to_device_batch(images, labels, device)
            outputs, loss = step(model, images, labels, optimizer, criterion)
            cm.update(outputs.argmax(dim=1), labels)
            loss_sum += (loss.item() if isinstance(loss, torch.Tensor) else loss) * len(labels)
        return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm)}
    train_one_epoch.__name__ = step.__name__
    return train_one_epoch


def right_step(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


def no_zero_grad(model, images, labels, optimizer, criterion):
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


def zero_grad_without_brackets(model, images, labels, optimizer, criterion):
    optimizer.zero_grad  # noqa: B018 (the mistake: never called)
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


def no_step(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    return outputs, loss


def step_without_brackets(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step  # noqa: B018
    return outputs, loss


def no_backward(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    optimizer.step()
    return outputs, loss


def backward_without_brackets(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward  # noqa: B018
    optimizer.step()
    return outputs, loss


def step_before_backward(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    optimizer.step()
    loss.backward()
    return outputs, loss


def zero_grad_between_backward_and_step(model, images, labels, optimizer, criterion):
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return outputs, loss


def softmax_before_the_loss(model, images, labels, optimizer, criterion):  # CrossEntropyLoss applies it again
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs.softmax(dim=1), labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


def loss_arguments_swapped(model, images, labels, optimizer, criterion):  # PyTorch raises NotImplementedError
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(labels, outputs)
    loss.backward()
    optimizer.step()
    return outputs, loss


def loss_of_the_predictions(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs.argmax(dim=1), labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


def float_labels(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels.float())
    loss.backward()
    optimizer.step()
    return outputs, loss


def backward_on_the_number(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels).item()
    loss.backward()
    optimizer.step()
    return outputs, loss


def forward_without_gradients(model, images, labels, optimizer, criterion):
    optimizer.zero_grad()
    with torch.no_grad():
        outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


def whole_loop(name):
    """Wrong answers that change the lines around the steps (the mode, the device, the sums)."""
    def train_one_epoch(model, loader, optimizer, criterion):
        if name != "no_train_mode":
            model.eval() if name == "eval_instead_of_train" else model.train if name == "train_without_brackets" \
                else model.train()
        cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
        for images, labels in loader:
            if name == "images_to_device":
                images, labels = images.to(device), labels.to(device)
            elif name == "images_to_float":
                images, labels = images.float(), labels
            elif name == "images_divided_by_255":
                images = images.float() / 255 if images.dtype == torch.uint8 else images
            else:
                images, labels = to_device_batch(images, labels, device)
            outputs, loss = right_step(model, images, labels, optimizer, criterion)
            cm.update(outputs.argmax(dim=1), labels)
            loss_sum += loss.item() * (1 if name == "loss_sum_without_batch_size" else len(labels))
        return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm)}
    train_one_epoch.__name__ = name
    return train_one_epoch


TRAIN_WRONG = [
    (train_loop(no_zero_grad), "gradients pile up; call optimizer.zero_grad()"),
    (train_loop(zero_grad_without_brackets), "gradients pile up; call optimizer.zero_grad()"),
    (whole_loop("no_train_mode"), "evaluation mode while training: call model.train()"),
    (whole_loop("eval_instead_of_train"), "evaluation mode while training: call model.train()"),
    (whole_loop("train_without_brackets"), "evaluation mode while training: call model.train()"),
    (train_loop(no_step), "optimizer.step() is never called"),
    (train_loop(step_without_brackets), "optimizer.step() is never called"),
    (train_loop(no_backward), "optimizer.step() is called without a gradient: is loss.backward() missing"),
    (train_loop(backward_without_brackets), "optimizer.step() is called without a gradient"),
    (train_loop(step_before_backward), "optimizer.step() runs before loss.backward()"),
    (train_loop(zero_grad_between_backward_and_step), "although loss.backward() ran: is zero_grad() called between "
                                                      "backward() and step()? Call it before backward()"),
    (train_loop(softmax_before_the_loss), "is the cross-entropy of softmax(outputs), not of the logits"),
    (train_loop(loss_arguments_swapped), "PyTorch raised it, not the exercise"),
    (train_loop(loss_of_the_predictions), "takes the raw outputs, shape (batch, 8), first"),
    (train_loop(float_labels), "the labels must stay integer class indices"),
    (train_loop(backward_on_the_number), "call backward() on the loss tensor itself"),
    (train_loop(forward_without_gradients), "is the forward pass inside `torch.no_grad()`"),
    (whole_loop("images_to_device"), "the model received uint8 images (0-255)"),
    (whole_loop("images_to_float"), "the model received floats up to 25"),
    (whole_loop("images_divided_by_255"), "other values than the batch holds once normalised"),
    (whole_loop("loss_sum_without_batch_size"), "it returned loss 0.1"),
]


def outputs_named_otherwise(model, loader, optimizer, criterion):  # the template's lines read `outputs`
    model.train()
    cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
    for images, labels in loader:
        images, labels = to_device_batch(images, labels, device)
        optimizer.zero_grad()
        predictions = model(images)
        loss = criterion(predictions, labels)
        loss.backward()
        optimizer.step()
        cm.update(outputs.argmax(dim=1), labels)  # noqa: F821 (the mistake)
        loss_sum += loss.item() * len(labels)
    return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm)}


def own_optimizer_in_the_loop(model, images, labels, optimizer, criterion):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # the mistake: not the one it was given
    return right_step(model, images, labels, optimizer, criterion)


def loss_turned_into_a_number(model, loader, optimizer, criterion):  # the template's line calls loss.item()
    model.train()
    cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
    for images, labels in loader:
        images, labels = to_device_batch(images, labels, device)
        outputs, loss = right_step(model, images, labels, optimizer, criterion)
        loss = loss.item()  # the mistake
        cm.update(outputs.argmax(dim=1), labels)
        loss_sum += loss.item() * len(labels)
    return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm)}


def step_then_zero_grad(model, images, labels, optimizer, criterion):  # zero_grad after step: right too
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return outputs, loss


def model_zero_grad(model, images, labels, optimizer, criterion):
    model.zero_grad()
    outputs = model(images)
    loss = criterion(outputs, labels)
    loss.backward()
    optimizer.step()
    return outputs, loss


TRAIN_WRONG += [
    (outputs_named_otherwise, "name 'outputs' is not defined: the two lines after the exercise use `outputs` and "
                              "`loss`: give yours these names"),
    (train_loop(own_optimizer_in_the_loop), "the weights changed, but not through the optimizer the function was "
                                            "given"),
    (loss_turned_into_a_number, "keep `loss` the tensor that criterion(outputs, labels) returns"),
]
TRAIN_RIGHT = [train_loop(right_step), train_loop(step_then_zero_grad), train_loop(model_zero_grad)]


# ============================================================================== 02: the test loop
def eval_loop(name):
    """The notebook's test loop with one mistake, `name` (right_* names are right variants)."""
    def evaluate(model, loader, criterion):
        cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
        if name != "no_eval_mode":
            model.eval()
        context = torch.enable_grad() if name == "no_no_grad" else (
            torch.inference_mode() if name == "right_inference_mode" else
            torch.no_grad if name == "no_grad_without_brackets" else torch.no_grad())
        with context:
            for images, labels in loader:
                if name == "images_to_device":
                    images, labels = images.to(device), labels.to(device)
                elif name == "images_to_float":
                    images = images.float()
                else:
                    images, labels = to_device_batch(images, labels, device)
                outputs = model(images)
                batch_loss = criterion(outputs.softmax(dim=1) if name == "softmax_before_the_loss" else outputs,
                                       labels)
                if name == "loss_assigned_not_added":
                    loss_sum = batch_loss.item() * len(labels)
                elif name == "loss_without_batch_size":
                    loss_sum += batch_loss.item()
                elif name == "right_loss_tensor":
                    loss_sum += batch_loss * len(labels)
                else:
                    loss_sum += batch_loss.item() * len(labels)
                if name == "argmax_over_the_batch":
                    cm.update(outputs.argmax(dim=0), labels)
                elif name == "cm_arguments_swapped":
                    cm.update(labels, outputs.argmax(dim=1))
                elif name == "right_cm_of_logits":
                    cm.update(outputs, labels)
                elif name == "max_instead_of_argmax":  # (values, indices), not the classes
                    cm.update(outputs.max(dim=1), labels)
                elif name != "no_cm_update":
                    cm.update(outputs.argmax(dim=1), labels)
                if name == "return_inside_the_loop":
                    return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm)}
        if name == "accuracy_in_percent":
            return {"loss": loss_sum / cm.total, "accuracy": 100 * accuracy(cm)}
        if name == "returns_a_tuple":
            return loss_sum / cm.total, accuracy(cm)
        return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm), "balanced_accuracy": balanced_accuracy(cm)}
    evaluate.__name__ = name
    return evaluate


def eval_mean_of_batch_means(model, loader, criterion):  # calls the model twice per batch
    model.eval()
    with torch.no_grad():
        batches = [to_device_batch(images, labels, device) for images, labels in loader]
        losses = [criterion(model(images), labels).item() for images, labels in batches]
        right = sum((model(images).argmax(1) == labels).sum().item() for images, labels in batches)
    return {"loss": sum(losses) / len(losses), "accuracy": right / sum(len(labels) for _, labels in batches)}


EVALUATE_WRONG = [
    (eval_loop("no_eval_mode"), "training mode while testing: call model.eval()"),
    (eval_loop("no_no_grad"), "gradients were recorded while testing"),
    (eval_loop("images_to_device"), "the model received uint8 images (0-255), as the prepared cache"),
    (eval_loop("images_to_float"), "uint8 images turned into floats but not normalised"),
    (eval_mean_of_batch_means, "add each batch's mean loss times its size to loss_sum"),
    (eval_loop("loss_without_batch_size"), "add each batch's mean loss times its size to loss_sum"),
    (eval_loop("loss_assigned_not_added"), "add each batch's mean loss times its size"),
    (eval_loop("no_cm_update"), "cm.total is 0 (a division by zero): call cm.update(...) for every batch"),
    (eval_loop("argmax_over_the_batch"), "cm.update got 8 predictions for 10 targets: the predictions are "
                                         "outputs.argmax(dim=1)"),
    (eval_loop("cm_arguments_swapped"), "cm.update takes the predictions first, then the labels"),
    (eval_loop("accuracy_in_percent"), "a percentage: return the fraction"),
    (eval_loop("return_inside_the_loop"), "the model saw 1 of the loader's 2 batches"),
    (eval_loop("returns_a_tuple"), "not a dict with the loss and the accuracy"),
    (eval_loop("no_grad_without_brackets"), "write `with torch.no_grad():`, with its brackets"),
    (eval_loop("max_instead_of_argmax"), "outputs.max(dim=1) gives (values, indices); the predictions are "
                                         "outputs.argmax(dim=1)"),
    (eval_loop("softmax_before_the_loss"), "the cross-entropy of softmax(outputs), not of the logits"),
]
EVALUATE_RIGHT = [eval_loop("right"), eval_loop("right_inference_mode"), eval_loop("right_loss_tensor"),
                  eval_loop("right_cm_of_logits")]

INITIAL_LOSS_WRONG = [
    (F.cross_entropy(torch.zeros(16, 8), torch.arange(16) % 8, reduction="sum"), "summed over the batch"),
    (F.nll_loss(torch.zeros(16, 8).softmax(1), torch.arange(16) % 8), f"far from ln 8 = {math.log(8):.2f}"),
    (float("nan"), "the loss is NaN"),
    ([2.0, 2.1], "float(loss) raised TypeError"),
]


# ============================================================================== 02: the Dataset
@pytest.fixture(scope="module")
def lesion_dataset():
    import pandas as pd
    from PIL import Image

    from skinlib.data import GROUND_TRUTH_CSV, IMAGES_DIR

    return solution("02_training_and_testing", "LesionDataset",
                    {"Path": Path, "pd": pd, "Image": Image, "Dataset": torch.utils.data.Dataset,
                     "GROUND_TRUTH_CSV": GROUND_TRUTH_CSV, "IMAGES_DIR": IMAGES_DIR})


def dataset_variant(right, name):
    """The notebook's LesionDataset with one change, `name` (right_* names are right variants)."""
    from PIL import Image

    from skinlib.data import train_transform

    class Variant(right):
        def __init__(self, data_dir, transform):
            super().__init__(data_dir, transform)
            if name == "labels_along_the_wrong_axis":
                import pandas as pd
                from skinlib.data import GROUND_TRUTH_CSV
                table = pd.read_csv(Path(data_dir) / GROUND_TRUTH_CSV)
                self.labels = table[list(CLASSES)].to_numpy().argmax(axis=0).tolist()  # one per column
            elif name == "labels_counted_from_one":
                self.labels = [label + 1 for label in self.labels]
            elif name in ("argmax_without_axis", "a_tuple_as_column_key", "columns_with_the_image_names"):
                import pandas as pd
                from skinlib.data import GROUND_TRUTH_CSV
                table = pd.read_csv(Path(data_dir) / GROUND_TRUTH_CSV)
                columns = {"argmax_without_axis": lambda: table[list(CLASSES)], "a_tuple_as_column_key":
                           lambda: table[CLASSES], "columns_with_the_image_names": lambda: table.iloc[:, 0:8]}[name]()
                self.labels = columns.to_numpy().argmax() if name == "argmax_without_axis" else \
                    columns.to_numpy().argmax(axis=1).tolist()

        def __len__(self):
            return len(self.paths) - 1 if name == "length_off_by_one" else len(self.paths)

        def __getitem__(self, index):
            if name == "index_ignored":
                index = 0
            if name == "png_instead_of_jpg":
                return self.transform(Image.open(self.paths[index].with_suffix(".png"))), self.labels[index]
            if name == "no_transform":
                return Image.open(self.paths[index]).convert("RGB"), self.labels[index]
            if name == "training_transform_hard_coded":
                return train_transform()(Image.open(self.paths[index]).convert("RGB")), self.labels[index]
            if name == "transform_of_the_path":
                return self.transform(self.paths[index]), self.labels[index]
            if name == "all_labels_returned":
                return self.transform(Image.open(self.paths[index]).convert("RGB")), self.labels
            image, label = super().__getitem__(index)
            return {"class_name_labels": lambda: (image, CLASSES[label]),
                    "float_labels": lambda: (image, float(label)),
                    "label_first": lambda: (label, image),
                    "one_hot_tensor": lambda: (image, F.one_hot(torch.tensor(label), len(CLASSES))),
                    "one_hot_numpy": lambda: (image, np.eye(len(CLASSES), dtype=np.float32)[label]),
                    "a_dict": lambda: {"image": image, "label": label},
                    "image_only": lambda: image,
                    "right_list_pair": lambda: [image, label],
                    "right_numpy_label": lambda: (image, np.int64(label)),
                    "right_tensor_label": lambda: (image, torch.tensor(label)),
                    }.get(name, lambda: (image, label))()

    Variant.__name__ = name
    return Variant


DATASET_WRONG = [
    ("no_transform", "the image is a PIL image, not a tensor: apply self.transform"),
    ("training_transform_hard_coded", "the image is a torch.uint8 tensor of shape (3, 224, 224), not float"),
    ("length_off_by_one", "len(dataset) is 159, but the CSV lists 160 images"),
    ("class_name_labels", "dataset[0]'s label is the text"),
    ("float_labels", "is a float: labels must be ints, the class index 0-7"),
    ("label_first", "dataset[0] is a (label, image) pair: the order is wrong; __getitem__ must return (image, label)"),
    ("one_hot_tensor", "dataset[0]'s label is a Tensor of 8 numbers (one-hot?), not a class index"),
    ("one_hot_numpy", "dataset[0]'s label is a NumPy array of 8 numbers (one-hot?)"),
    ("a_dict", "dataset[0] is a dict, not an (image, label) pair"),
    ("image_only", "dataset[0] is a Tensor, not an (image, label) pair"),
    ("index_ignored", "differ from the CSV's"),
    ("labels_along_the_wrong_axis", "self.labels holds 8 values for the CSV's 160 rows: one class index per row "
                                    "(argmax(axis=1)"),
    ("labels_counted_from_one", "differ from the CSV's"),
    ("png_instead_of_jpg", "dataset[0] raised FileNotFoundError"),
    ("argmax_without_axis", "), not one label per image: argmax(axis=1) gives each row's position of the 1.0"),
    ("a_tuple_as_column_key", "pandas reads a tuple as one column name: pick the 8 columns with table[list(CLASSES)]"),
    ("columns_with_the_image_names", "the argmax met a column of text (the image names?)"),
    ("transform_of_the_path", "the transform was given the file's path: open the image first"),
    ("all_labels_returned", "dataset[0]'s label is all 160 labels: return this item's, self.labels[index]"),
]
DATASET_RIGHT = ["right", "right_list_pair", "right_numpy_label", "right_tensor_label"]


# ============================================================================== 03: the ResNet-50 head
def head_with_1000_outputs(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(2048, 1000)
    return model


def out_features_changed_in_place(model):
    model.requires_grad_(False)
    model.fc.out_features = 8
    model.fc.requires_grad_(True)
    return model


def head_with_512_inputs(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(512, 8)
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


def head_returned_instead_of_model(model):
    model.requires_grad_(False)
    model.fc = nn.Linear(2048, 8)
    return model.fc


def a_new_network_returned(model):
    from torchvision.models import resnet50

    fresh = resnet50().requires_grad_(False)
    fresh.fc = nn.Linear(2048, 8)
    return fresh


def head_on_the_wrong_attribute(model):
    model.requires_grad_(False)
    model.classifier = nn.Linear(2048, 8)
    return model


HEAD_WRONG = [
    (head_with_1000_outputs, "the head's weights map 2048 features to 1000 outputs; it needs 2048 -> 8"),
    (out_features_changed_in_place, "changing fc.out_features only renames the old 1000-output layer"),
    (head_with_512_inputs, "the head's weights map 512 features to 8 outputs"),
    (backbone_left_trainable, "backbone parameters still learn"),
    (head_frozen_too, "the new head is frozen too"),
    (head_not_returned, "your function returned None: end it with `return model`"),
    (head_returned_instead_of_model, "returned a Linear that has no fc: return the whole model"),
    (a_new_network_returned, "the returned network's backbone is not the one your function was given"),
    (head_on_the_wrong_attribute, "the head's weights map 2048 features to 1000 outputs"),
]


def sequential_head(model):
    model.requires_grad_(False)
    model.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(2048, 8))
    return model


def changed_copy_returned(model):
    model = copy.deepcopy(model).requires_grad_(False)
    model.fc = nn.Linear(2048, 8)
    return model


# ============================================================================== the catalogue
def _cases(check, entries, prefix):
    return [pytest.param(check, answer, message, id=f"{prefix}-{_name(answer)}") for answer, message in entries]


def _name(answer) -> str:
    if isinstance(answer, str):
        return answer
    if isinstance(answer, tuple):
        return "+".join(_name(part) for part in answer)
    name = getattr(answer, "__name__", None)
    return name if name and name != "<lambda>" else repr(answer)[:24].replace(" ", "")


CATALOGUE = [
    *_cases("check_fc1_inputs", FC1_WRONG, "01-fc1"),
    *_cases("check_simple_cnn", SIMPLE_CNN_WRONG, "01-simplecnn"),
    *[pytest.param("check_parameter_formulas", (conv, linear), message, id=f"01-formulas-{number}")
      for number, (conv, linear, message) in enumerate(FORMULAS_WRONG)],
    *_cases("compare_guess", GUESSES_WRONG, "01-guess"),
    *[pytest.param("check_initial_loss", value, message, id=f"02-initial-loss-{number}")
      for number, (value, message) in enumerate(INITIAL_LOSS_WRONG)],
    *_cases("check_dataset_class", DATASET_WRONG, "02-dataset"),
    *_cases("check_train_one_epoch", TRAIN_WRONG, "02-train"),
    *_cases("check_evaluate", EVALUATE_WRONG, "02-evaluate"),
    *_cases("check_resnet_head", HEAD_WRONG, "03-head"),
]


def run_check(check: str, answer, request):
    if check == "check_dataset_class":
        lesion, folder = request.getfixturevalue("lesion_dataset"), request.getfixturevalue("synthetic_dir")
        return checks.check_dataset_class(answer if not isinstance(answer, str) else dataset_variant(lesion, answer),
                                          folder)
    if check == "check_parameter_formulas":
        return checks.check_parameter_formulas(*answer)
    if check == "compare_guess":
        return checks.compare_guess(answer, 108_896_416, "SimpleCNN's parameters", "2_500_000")
    return getattr(checks, check)(answer)


def test_the_catalogue_holds_at_least_60_wrong_answers():
    assert len(CATALOGUE) >= 60
    assert len({case.id for case in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("check, answer, message", CATALOGUE)
def test_a_wrong_answer_is_caught_and_named(check, answer, message, request, capsys):
    assert run_check(check, answer, request) is False
    printed = said(capsys)
    assert message in printed
    assert "not done yet" not in printed  # the answer is written: it is wrong, not missing
    assert "Traceback" not in printed


RIGHT = [
    *[pytest.param("check_fc1_inputs", value, id=f"01-fc1-{type(value).__name__}")
      for value in (32 * 53 * 53, np.int64(89888))],
    *[pytest.param("check_simple_cnn", answer, id=f"01-simplecnn-{answer.__name__}")
      for answer in (SimpleCNN, FunctionalPool, ReluModulesAndFlattenModule)],
    pytest.param("check_parameter_formulas", (conv_parameters, linear_parameters), id="01-formulas"),
    pytest.param("check_parameter_formulas", (lambda c_in, c_out, k: np.int64(c_out * (c_in * k ** 2 + 1)),
                                              lambda n_in, n_out: torch.tensor((n_in + 1) * n_out)),
                 id="01-formulas-numpy-and-tensor"),
    *[pytest.param("compare_guess", value, id=f"01-guess-{type(value).__name__}")
      for value in (1e8, 2_500_000, torch.tensor(1e8))],  # a tensor guess is a number too
    pytest.param("check_initial_loss", F.cross_entropy(torch.zeros(16, 8), torch.arange(16) % 8),
                 id="02-initial-loss-tensor"),
    *[pytest.param("check_dataset_class", name, id=f"02-dataset-{name}") for name in DATASET_RIGHT],
    *[pytest.param("check_train_one_epoch", answer, id=f"02-train-{answer.__name__}") for answer in TRAIN_RIGHT],
    *[pytest.param("check_evaluate", answer, id=f"02-evaluate-{answer.__name__}") for answer in EVALUATE_RIGHT],
    *[pytest.param("check_resnet_head", answer, id=f"03-head-{answer.__name__}")
      for answer in (sequential_head, changed_copy_returned)],
]


@pytest.mark.parametrize("check, answer", RIGHT)
def test_a_right_variant_passes(check, answer, request, capsys):
    assert run_check(check, answer, request) is True, capsys.readouterr().out
    assert capsys.readouterr().out.count("\n") == 1


# ============================================================================== the notebooks' own solutions
def test_the_notebook_solution_of_simple_cnn_passes(capsys):
    answer = solution("01_simple_cnn", "SimpleCNN", {"FC1_INPUTS": 32 * 53 * 53})
    assert checks.check_simple_cnn(answer) is True
    printed = said(capsys)
    assert printed.startswith("✓ SimpleCNN: output (2, 8), the report's layers and parameter count")
    assert "108,896,416" not in printed and "108.9" not in printed  # the notebook asks for a guess of it below


def test_the_notebook_solution_of_the_parameter_formulas_passes(capsys):
    conv, linear = solution("01_simple_cnn", "conv_parameters"), solution("01_simple_cnn", "linear_parameters")
    assert checks.check_parameter_formulas(conv, linear) is True
    assert said(capsys).startswith("✓ parameter formulas: both formulas match PyTorch's counts")


def test_the_notebook_solution_of_the_training_loop_passes(capsys):
    answer = solution("02_training_and_testing", "train_one_epoch_by_hand", loop_namespace())
    assert checks.check_train_one_epoch(answer) is True
    assert said(capsys).startswith("✓ train_one_epoch: zeroes gradients")


def test_the_notebook_solution_of_the_test_loop_passes(capsys):
    answer = solution("02_training_and_testing", "evaluate_by_hand", loop_namespace())
    assert checks.check_evaluate(answer) is True
    assert said(capsys).startswith("✓ evaluate: evaluation mode, no gradients, uint8 and float batches")


def test_the_notebook_solution_of_the_dataset_passes(lesion_dataset, synthetic_dir, capsys):
    assert checks.check_dataset_class(lesion_dataset, synthetic_dir) is True
    assert said(capsys).startswith(f"✓ Dataset: {len(load_index(synthetic_dir))} items of (float (3, 224, 224), int)")


def test_the_reference_dataset_passes_too(synthetic_dir, capsys):
    assert checks.check_dataset_class(checks.reference_dataset, synthetic_dir) is True


def test_the_notebook_solution_of_the_head_passes(capsys):
    answer = solution("03_resnet50_transfer_learning", "replace_head_and_freeze")
    assert checks.check_resnet_head(answer) is True
    assert said(capsys).startswith("✓ ResNet-50 head: 2048 -> 8 head (16,392 parameters), backbone frozen")


def test_skinlib_new_head_passes_too(capsys):
    from skinlib.models import new_head

    assert checks.check_resnet_head(lambda model: new_head(model, 8, freeze_backbone=True)) is True
    assert checks.check_resnet_head(lambda model: new_head(model, 8), frozen=False) is True


# ============================================================================== not done yet, and only then
def placeholder(*args, **kwargs):
    raise NotImplementedError("steps 1-5: zero the gradients, outputs, loss, backward, optimizer step")


class NotWritten(nn.Module):
    def __init__(self, num_classes=8):
        raise NotImplementedError("conv1, ...")


class ForwardNotWritten(SimpleCNN):
    def forward(self, x):
        raise NotImplementedError("conv1, ReLU, pool, ...")


@pytest.mark.parametrize("check, answer", [
    ("check_simple_cnn", NotWritten), ("check_simple_cnn", ForwardNotWritten),
    ("check_parameter_formulas", (placeholder, placeholder)), ("check_train_one_epoch", placeholder),
    ("check_evaluate", placeholder), ("check_resnet_head", placeholder), ("check_dataset_class", placeholder),
], ids=lambda v: v if isinstance(v, str) else "")
def test_the_exercises_own_placeholder_is_not_done_yet(check, answer, request, capsys):
    assert run_check(check, answer, request) is False
    printed = said(capsys)
    assert "not done yet (the exercise above still raises NotImplementedError(" in printed
    assert "write that part in its place, then delete the raise line" in printed


def test_a_raise_line_left_under_written_code_is_quoted(capsys):
    def written_but_raise_left(model, loader, optimizer, criterion):
        model.train()
        raise NotImplementedError("put the model in training mode")
    assert checks.check_train_one_epoch(written_but_raise_left) is False
    assert "still raises NotImplementedError('put the model in training mode'): write that part in its place, " \
           "then delete the raise line" in said(capsys)


def test_a_notimplementederror_of_pytorch_is_not_taken_for_the_placeholder(capsys):
    def swapped(outputs, labels):
        return nn.CrossEntropyLoss()(labels, outputs)
    with pytest.raises(NotImplementedError) as raised:
        swapped(torch.randn(4, 8), torch.arange(4))
    from skinlib.checks.core import _is_placeholder

    assert _is_placeholder(raised.value) is False
    with pytest.raises(NotImplementedError) as raised:
        placeholder()
    assert _is_placeholder(raised.value) is True


def test_fc1_inputs_left_at_none_says_what_to_replace(capsys):
    assert checks.check_fc1_inputs(None) is False
    printed = said(capsys)
    assert "fc1's input size: not done yet (FC1_INPUTS is still None" in printed
    assert "NotImplementedError" not in printed  # the student's cell raises nothing


def test_simple_cnn_built_before_exercise_1_says_to_do_it_first(capsys):
    answer = solution("01_simple_cnn", "SimpleCNN", {"FC1_INPUTS": None})  # Exercise 1 skipped
    assert checks.check_simple_cnn(answer) is False
    assert "FC1_INPUTS is still None, so do Exercise 1 first" in said(capsys)


def test_only_fc1s_wrong_shape_points_to_the_input_size_computed_above(capsys):
    assert checks.check_simple_cnn(WrongFc1) is False
    assert "look at fc1 in __init__ (its input size, computed above)" in said(capsys)
    assert checks.check_simple_cnn(Conv2With64Channels) is False
    assert "computed above" not in said(capsys)


def test_a_wrong_loss_and_a_wrong_accuracy_get_their_own_messages(capsys):
    assert checks.check_evaluate(eval_mean_of_batch_means) is False
    assert "accuracy" not in said(capsys)  # its accuracy is right: the message is about the loss alone
    assert checks.check_evaluate(eval_loop("accuracy_in_percent")) is False
    message = said(capsys)
    assert "it returned accuracy 6.25, a percentage: return the fraction 0.0625" in message
    assert "loss" not in message


def test_a_guess_left_at_none_asks_for_a_number(capsys):
    assert checks.compare_guess(None, 2.079, "the initial loss", "2.5") is False
    assert "write your guess for the initial loss in MY_GUESS, as a number such as 2.5" in said(capsys)


def test_a_number_guess_is_put_beside_the_measure(capsys):
    assert checks.compare_guess(100_000_000, 108_896_416, "SimpleCNN's parameters", "2_500_000") is True
    assert "your guess for SimpleCNN's parameters: 100,000,000; measured: 108,896,416, 0.92 times" in said(capsys)


def test_use_yours_or_falls_back_on_the_reference_and_says_so(capsys):
    assert checks.use_yours_or(SimpleCNN, NotWritten, True, "SimpleCNN") is NotWritten
    assert checks.use_yours_or(SimpleCNN, NotWritten, False, "SimpleCNN") is SimpleCNN
    assert "skinlib's SimpleCNN" in said(capsys)


def test_the_dataset_check_on_real_isic_images(lesion_dataset, real_sample_dir, capsys):
    # real JPEGs of the three archives, in the order of the real CSV: the solution passes, a wrong label is named
    assert checks.check_dataset_class(lesion_dataset, real_sample_dir) is True, capsys.readouterr().out
    assert said(capsys).startswith(f"✓ Dataset: {len(load_index(real_sample_dir))} items")
    assert checks.check_dataset_class(dataset_variant(lesion_dataset, "one_hot_tensor"), real_sample_dir) is False
    assert "dataset[0]'s label is a Tensor of 8 numbers (one-hot?)" in said(capsys)
