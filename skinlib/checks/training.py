"""Self-checks for notebook 02's exercises: the loss at start, the Dataset, the training and test loops.

Each prints one sentence (see `skinlib.checks.core`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from skinlib.checks.core import _a, _call, _report, _Wrong
from skinlib.layout import CLASSES

INITIAL_LOSS = math.log(len(CLASSES))  # equal scores for 8 classes: -ln(1/8)


def check_initial_loss(loss: Any) -> bool:
    """An untrained network's mean cross-entropy on a batch is about ln 8."""
    def run() -> str:
        value = _call(lambda: float(loss), "float(loss)")
        if value != value:  # NaN
            raise _Wrong("the loss is NaN: look at the images (normalised?) and the model's outputs.")
        if value > 2 * INITIAL_LOSS:
            raise _Wrong(f"{value:.2f} is far above ln 8 = {INITIAL_LOSS:.2f}: is it summed over the "
                         "batch instead of averaged, or computed on unnormalised images?")
        if abs(value - INITIAL_LOSS) > 0.5:
            raise _Wrong(f"{value:.2f} is far from ln 8 = {INITIAL_LOSS:.2f}: pass the raw logits and "
                         "the labels to nn.CrossEntropyLoss (no softmax, no NLLLoss) of an untrained model.")
        return f"{value:.3f}, close to ln 8 = {INITIAL_LOSS:.3f}."
    return _report("initial loss", run)


class _Probe(nn.Module):
    """A tiny classifier of 3x4x4 images that records its mode, grad state and input at each forward.

    A uint8 batch reaching it is a loop that moved the images without `to_device_batch`: the real
    SimpleCNN would raise a dtype error there, so the probe says what to use instead."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 4 * 4, len(CLASSES))
        self.modes: list[tuple[bool, bool]] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        if x.dtype == torch.uint8:
            raise _Wrong("the model received uint8 images (0-255), as the prepared cache and the training "
                         "transform give them: move each batch with `images, labels = to_device_batch(images, "
                         "labels, device)`, which turns them into normalised floats.")
        self.modes.append((self.training, torch.is_grad_enabled()))
        self.inputs.append(x.detach())
        return self.fc(x.flatten(1))


class _Spy(torch.optim.SGD):
    """Keeps a copy of the gradient it is asked to step with, and whether loss.backward() ran since
    the last step (a hook on the first weight counts the gradients computed for it)."""

    def __init__(self, params, lr):
        params = list(params)
        super().__init__(params, lr=lr)
        self.grads: list[torch.Tensor | None] = []
        self.backward_before: list[bool] = []
        self.backwards = 0  # in all, before or after a step
        self._since_step = 0
        params[0].register_hook(self._count_backward)

    def _count_backward(self, grad):
        self.backwards += 1
        self._since_step += 1

    def step(self, closure=None):
        grad = self.param_groups[0]["params"][0].grad
        self.grads.append(None if grad is None else grad.detach().clone())
        self.backward_before.append(self._since_step > 0)
        self._since_step = 0
        return super().step(closure)


def _batches(sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What the notebook's loaders give, on the CPU: the first batch uint8 0-255 (the prepared cache,
    the training transform), the others float and normalised (eval_transform on the JPEGs)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (sum(sizes), 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(sum(sizes)).remainder(len(CLASSES))
    batches, start = [], 0
    for number, size in enumerate(sizes):
        part = images[start:start + size]
        batches.append((part if number == 0 else _normalised(part), labels[start:start + size]))
        start += size
    return batches


def _normalised(images: torch.Tensor) -> torch.Tensor:
    from skinlib.engine import to_device_batch

    return to_device_batch(images, torch.zeros(len(images)), torch.device("cpu"))[0]


def _check_inputs(model: _Probe, batches, device) -> None:
    """The model must see each batch as to_device_batch gives it: normalised floats."""
    for seen, (images, _) in zip(model.inputs, batches):
        expected = _normalised(images).to(device)
        if seen.shape == expected.shape and torch.allclose(seen.float(), expected, atol=1e-4):
            continue
        if seen.shape == expected.shape and seen.max() > 10:
            raise _Wrong(f"the model received floats up to {seen.max().item():.0f}: uint8 images turned into "
                         "floats but not normalised; move each batch with `images, labels = "
                         "to_device_batch(images, labels, device)` instead of .float() or .to(device).")
        raise _Wrong("the model received other values than the batch holds once normalised: move each batch "
                     "with `images, labels = to_device_batch(images, labels, device)` and pass it on unchanged.")


def _call_loop(loop: Callable[[], Any], where: str) -> Any:
    """Run the student's loop; a division by zero there is the template's `loss_sum / cm.total`."""
    def run() -> Any:
        try:
            return loop()
        except ZeroDivisionError:
            raise _Wrong("cm.total is 0 (a division by zero): call cm.update(...) for every batch.") from None
        except ValueError as error:
            if "predictions for" in str(error):  # ConfusionMatrix.update's size check
                raise _Wrong(f"cm.update got {error}: the predictions are outputs.argmax(dim=1), one class "
                             "per image (dim 0 runs over the images, dim 1 over the classes).") from None
            if "only one element tensors" in str(error):  # cm.update(outputs.max(1), ...): a (values, indices) pair
                raise _Wrong("cm.update got a pair of tensors, not one class per image: outputs.max(dim=1) gives "
                             "(values, indices); the predictions are outputs.argmax(dim=1).") from None
            raise
    return _call(run, where)


def _returned(result: Any, key: str) -> float | None:
    """result[key] as a float, None if the loop returned no such number."""
    try:
        return float(result[key])
    except (TypeError, KeyError, ValueError, IndexError, RuntimeError):
        return None


def check_train_one_epoch(train_one_epoch: Callable, device="cpu") -> bool:
    """train_one_epoch(model, loader, optimizer, criterion): train mode, zeroed gradients, a step
    per batch, the loss of the raw outputs returned, a loss that falls when it overfits one small batch.
    The probe loader gives the same 16 images twice, as uint8 then as normalised floats (both kinds
    the notebook's loaders give): with lr 0, both steps must see the same gradient."""
    device = torch.device(device)

    def run() -> str:
        uint8_batch = _batches((16,))[0]
        batches = [uint8_batch, (_normalised(uint8_batch[0]), uint8_batch[1])]
        criterion, model = nn.CrossEntropyLoss(), _Probe().to(device).eval()
        spy = _Spy(model.parameters(), lr=0.0)  # lr 0: both steps see the same weights
        weights = model.fc.weight.detach().clone()
        result = _call_loop(lambda: train_one_epoch(model, batches, spy, criterion), "train_one_epoch")
        if not spy.grads and not torch.equal(weights, model.fc.weight):
            raise _Wrong("the weights changed, but not through the optimizer the function was given: step "
                         "with `optimizer`, the argument, instead of making a new one in the loop.")
        if not model.modes or not model.modes[0][0]:
            raise _Wrong("the model was in evaluation mode while training: call model.train() first.")
        if not model.modes[0][1]:
            raise _Wrong("the forward pass ran without gradients: take `torch.no_grad()` out of the training loop.")
        _check_inputs(model, batches, device)
        _check_steps(spy)
        _check_training_loss(_returned(result, "loss"), model, batches[1], criterion)
        model = _Probe().to(device)
        images, labels = batches[1][0].to(device), batches[1][1].to(device)
        before = criterion(model(images), labels).item()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(30):
            _call_loop(lambda: train_one_epoch(model, [batches[1]], optimizer, criterion), "train_one_epoch")
        after = criterion(model(images), labels).item()
        if not after < before / 2:
            raise _Wrong(f"30 passes over one small batch took the loss from {before:.2f} to "
                         f"{after:.2f}; it should fall below half: is the loss computed from this "
                         "batch's outputs and labels, and optimizer.step() called?")
        return f"zeroes gradients, steps once per batch, overfits one batch (loss {before:.2f} -> {after:.2f})."
    return _report("train_one_epoch", run)


def _check_steps(spy: _Spy) -> None:
    """One step per batch, each after its own backward and with its own gradient only."""
    if not spy.grads:
        raise _Wrong("optimizer.step() is never called: each batch needs loss.backward() then "
                     "optimizer.step().")
    if spy.grads[0] is None or not spy.grads[0].any():
        if spy.backward_before[0]:
            raise _Wrong("optimizer.step() finds no gradient although loss.backward() ran: is "
                         "zero_grad() called between backward() and step()? Call it before backward().")
        if spy.backwards:
            raise _Wrong("optimizer.step() runs before loss.backward(), so it has no gradient yet: "
                         "backward first, then step.")
        raise _Wrong("optimizer.step() is called without a gradient: is loss.backward() missing "
                     "before it?")
    if len(spy.grads) != 2:
        times = f"{len(spy.grads)} time{'s' if len(spy.grads) > 1 else ''}"
        raise _Wrong(f"optimizer.step() ran {times} for 2 batches: call it once "
                     "per batch, inside the loop.")
    if spy.grads[1] is None or not torch.allclose(spy.grads[1], spy.grads[0], atol=1e-5):
        if spy.grads[1] is not None and torch.allclose(spy.grads[1], 2 * spy.grads[0], atol=1e-5):
            raise _Wrong("the second step's gradient is twice the first: gradients pile up; call "
                         "optimizer.zero_grad() before loss.backward() in every step.")
        raise _Wrong("the second step's gradient is not that batch's own: one zero_grad(), forward, "
                     "loss, backward() and step() per batch, in that order.")


def _check_training_loss(returned: float | None, model: nn.Module, batch, criterion) -> None:
    """With lr 0 every batch's loss is the cross-entropy of the untouched model's logits."""
    if returned is None:
        return  # the template returns the loss; a loop that returns none is judged by its steps
    device = model.fc.weight.device
    with torch.no_grad():
        outputs = model.fc(batch[0].to(device).flatten(1))
    labels = batch[1].to(device)
    right = criterion(outputs, labels).item()
    if abs(returned - right) <= 1e-4:
        return
    if abs(returned - criterion(outputs.softmax(dim=1), labels).item()) <= 1e-4:
        raise _Wrong(f"the loss {returned:.4f} is the cross-entropy of softmax(outputs), not of the logits "
                     f"({right:.4f}): nn.CrossEntropyLoss applies softmax itself, so pass the raw outputs: "
                     "criterion(outputs, labels).")
    raise _Wrong(f"it returned loss {returned:.4f}, expected {right:.4f}, the mean cross-entropy of the "
                 "batches: compute `loss = criterion(outputs, labels)` and keep the template's lines that "
                 "add it up.")


def check_evaluate(evaluate: Callable, device="cpu") -> bool:
    """evaluate(model, loader, criterion): eval mode, no gradients, the right mean loss and accuracy,
    on a uint8 batch of 10 and a float batch of 6 (the two kinds the notebook's loaders give)."""
    device = torch.device(device)

    def run() -> str:
        batches = _batches((10, 6))
        model, criterion = _Probe().to(device).train(), nn.CrossEntropyLoss()
        weights = model.fc.weight.detach().clone()
        result = _call_loop(lambda: evaluate(model, batches, criterion), "evaluate")
        if not model.modes or model.modes[0][0]:
            raise _Wrong("the model was in training mode while testing: call model.eval() first.")
        if model.modes[0][1]:
            raise _Wrong("gradients were recorded while testing: run the loop inside `with torch.no_grad():`.")
        if not torch.equal(weights, model.fc.weight):
            raise _Wrong("testing changed the weights: the test loop must not call the optimizer.")
        if len(model.inputs) < len(batches):
            raise _Wrong(f"the model saw {len(model.inputs)} of the loader's {len(batches)} batches: call it on "
                         "every batch (is a `return` or `break` inside the loop?).")
        _check_inputs(model, batches, device)
        _check_scores(result, model, batches, criterion)
        return "evaluation mode, no gradients, uint8 and float batches, the right loss and accuracy."
    return _report("evaluate", run)


def _check_scores(result: Any, model: _Probe, batches, criterion) -> None:
    device = model.fc.weight.device
    with torch.no_grad():
        outputs = torch.cat([model.fc(_normalised(images).to(device).flatten(1)) for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches]).to(device)
    loss = criterion(outputs, labels).item()
    predictions = outputs.argmax(dim=1)
    right = (predictions == labels).float().mean().item()
    got = {key: _returned(result, key) for key in ("loss", "accuracy")}
    if None in got.values():
        raise _Wrong(f"it returned {result!r:.80}, not a dict with the loss and the accuracy: keep the "
                     "template's `return {...}` line.")
    if abs(got["loss"] - criterion(outputs.softmax(dim=1), labels).item()) <= 1e-4:
        raise _Wrong(f"it returned loss {got['loss']:.4f}, the cross-entropy of softmax(outputs), not of the "
                     f"logits ({loss:.4f}): nn.CrossEntropyLoss applies softmax itself, so pass the raw outputs.")
    if abs(got["loss"] - loss) > 1e-4:
        raise _Wrong(f"it returned loss {got['loss']:.4f}, expected {loss:.4f}: add each batch's mean loss "
                     "times its size to loss_sum (`loss_sum += criterion(outputs, labels).item() * len(labels)`), "
                     "for every batch.")
    if right and abs(got["accuracy"] - 100 * right) <= 1e-4:
        raise _Wrong(f"it returned accuracy {got['accuracy']:.4g}, a percentage: return the fraction "
                     f"{right:.4f} (correct predictions / images), as accuracy(cm) gives it.")
    if abs(got["accuracy"] - right) > 1e-6:
        raise _Wrong(f"it returned accuracy {got['accuracy']:.4f}, expected {right:.4f}: update cm with "
                     "every batch's predictions, outputs.argmax(dim=1), and their labels.")
    balanced = _returned(result, "balanced_accuracy")
    if balanced is not None:
        from skinlib.metrics import ConfusionMatrix, balanced_accuracy

        expected = balanced_accuracy(ConfusionMatrix(len(CLASSES)).update(predictions, labels))
        if abs(balanced - expected) > 1e-6:
            raise _Wrong(f"it returned balanced accuracy {balanced:.4f}, expected {expected:.4f}: "
                         "cm.update takes the predictions first, then the labels.")


def reference_dataset(data_dir, transform) -> torch.utils.data.Dataset:
    """skinlib's Dataset of every image in `data_dir`, with the signature of notebook 02's."""
    from skinlib.data import ISICDataset, load_index

    return ISICDataset(load_index(data_dir), transform=transform)


def _is_number(value: Any) -> bool:  # a label: a Python, NumPy or 0-d tensor number
    return isinstance(value, (int, float, np.number)) or (isinstance(value, torch.Tensor) and value.dim() == 0)


def _kind(value: Any) -> str:
    """'a PIL image', 'an int', 'a dict': what a value is, in words."""
    kind = type(value)
    if kind.__module__.startswith("PIL"):
        return "a PIL image"
    return "a NumPy array" if isinstance(value, np.ndarray) else _a(kind.__name__)


def check_dataset_class(dataset_class: Callable, data_dir) -> bool:
    """`dataset_class(data_dir, transform)` gives one (3x224x224 float tensor, int label) pair per CSV
    row (a tuple or a list, as a DataLoader batches both), in the CSV's order."""
    from skinlib.data import eval_transform, load_index

    def run() -> str:
        dataset = _call(lambda: dataset_class(data_dir, transform=eval_transform()), "the Dataset's __init__")
        frame = load_index(data_dir)
        size = _call(lambda: len(dataset), "len(dataset)")
        if size != len(frame):
            raise _Wrong(f"len(dataset) is {size}, but the CSV lists {len(frame)} images: look at __len__.")
        _check_labels_attribute(dataset, len(frame))
        image, _ = _item(dataset, 0)
        count = min(len(frame), 8)  # each item opens a JPEG: a few are enough, and fast on the real data
        labels = [_label(_item(dataset, i)[1], i, len(frame)) for i in range(count)]
        expected = [int(label) for label in frame["label"].iloc[:count]]
        if labels != expected:
            raise _Wrong(f"labels {labels[:6]} differ from the CSV's {expected[:6]}: a label is the class "
                         "index 0-7, the position of the column that holds 1.0, and dataset[i] is row i.")
        loader = torch.utils.data.DataLoader(dataset, batch_size=2)
        images, _ = _call(lambda: next(iter(loader)), "a DataLoader over the dataset")
        return f"{size} items of (float {tuple(image.shape)}, int), batched by a DataLoader to {tuple(images.shape)}."
    return _report("Dataset", run)


def _check_labels_attribute(dataset, rows: int) -> None:
    """The template's `self.labels`, when the student kept that name: one label per CSV row."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return
    try:
        size = len(labels)
    except TypeError:  # one number: argmax() without axis=1 flattens the table first
        raise _Wrong(f"self.labels is one number ({labels!r:.30}), not one label per image: argmax(axis=1) "
                     "gives each row's position of the 1.0.") from None
    if size != rows:
        raise _Wrong(f"self.labels holds {size} values for the CSV's {rows} rows: one class index per row "
                     "(argmax(axis=1) over the 8 class columns).")


def _item(dataset, index: int) -> tuple[torch.Tensor, Any]:
    """dataset[index] as (image, label), once it is a pair whose image is a float 3x224x224 tensor."""
    item = _call(lambda: dataset[index], f"dataset[{index}]")
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise _Wrong(f"dataset[{index}] is {_kind(item)}, not an (image, label) pair: end __getitem__ with "
                     "`return image, label`.")
    image, label = item
    if _is_number(image) and not _is_number(label):
        raise _Wrong(f"dataset[{index}] is a (label, image) pair: the order is wrong; __getitem__ must "
                     "return (image, label).")
    if not isinstance(image, torch.Tensor):
        raise _Wrong(f"the image is {_kind(image)}, not a tensor: apply self.transform in __getitem__.")
    if tuple(image.shape) != (3, 224, 224) or not image.is_floating_point():
        raise _Wrong(f"the image is a {image.dtype} tensor of shape {tuple(image.shape)}, not "
                     "float (3, 224, 224): open it as RGB and apply self.transform (the one __init__ was given).")
    return image, label


def _label(value: Any, index: int, rows: int) -> Any:
    """A label as a Python number; a one-hot vector, a class name or a float label is explained."""
    size = (value.size if isinstance(value, np.ndarray) else value.numel() if isinstance(value, torch.Tensor)
            else len(value) if isinstance(value, (list, tuple)) else None)
    if size is not None and size == rows != len(CLASSES):
        raise _Wrong(f"dataset[{index}]'s label is all {rows} labels: return this item's, self.labels[index].")
    if size is not None and size != 1:
        raise _Wrong(f"dataset[{index}]'s label is {_kind(value)} of {size} numbers (one-hot?), not a class "
                     "index: return the position of the 1.0, an int 0-7 (nn.CrossEntropyLoss takes class indices).")
    if isinstance(value, (list, tuple)):
        raise _Wrong(f"dataset[{index}]'s label is {_kind(value)}, not a class index: return a plain int 0-7.")
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        value = value.item()
    if isinstance(value, str):
        raise _Wrong(f"dataset[{index}]'s label is the text {value!r}: a label is the class index 0-7 "
                     "(CLASSES.index(name) gives it), a number the loss can use.")
    if isinstance(value, float):
        raise _Wrong(f"dataset[{index}]'s label {value!r} is a float: labels must be ints, the class index 0-7 "
                     "(nn.CrossEntropyLoss takes integer classes): convert with int(...).")
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Wrong(f"dataset[{index}]'s label is {_kind(value)}, not an int class index 0-7.")
    return value
