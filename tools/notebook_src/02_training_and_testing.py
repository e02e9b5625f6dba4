# %% [markdown]
# # 02 — Training and testing
#
# {{BADGE}}
#
# *Study time: about 2 hours (three exercises and a guess; the full training run adds its own time).*
#
# Notebook 01 built SimpleCNN; here it learns. We write the training loop and the test loop out in full, step by
# step, run them, then hand the same work to `skinlib.engine.fit`, which adds what a GPU wants. Then we test the
# network once on images it never saw, and ask what its accuracy is worth.
#
# **You will learn**
# - the input pipeline: a `Dataset` that reads the labels and opens the images, the transforms, a `DataLoader`;
# - the seven steps of a training step: zero the gradients, forward, loss, backward, optimizer step, predict, count;
# - why we watch a *validation* set during training and touch the *test* set once at the end;
# - to read training curves (learning, over-fitting) and a confusion matrix;
# - why accuracy misleads on unbalanced data, and what balanced accuracy says instead.
#
# **A lab.** You write the `Dataset`, the training loop and the test loop (cells marked *Exercise*: running one only
# defines your class or function, so it never stops the notebook); the check cell after each runs your code and says
# whether it is right, what to look at, or that it is "not done yet", then tries it out. Until an exercise passes,
# the cells below use skinlib's own version, so the notebook runs to the end at any time (Colab: Runtime > Run all).

# %% [markdown]
# ## Set-up
# - In Colab, first **File > Save a copy in Drive** and work in that copy (a notebook opened from its badge is not
#   saved). The cells below install `skinlib`, print the versions and the device, and get the data as in notebook
#   00: in Colab the course bundle from your Drive, with the images already *prepared* (decoded once and stored at
#   256x256 in a cache on the runtime's local disk, `data.cache_dir`, so that JPEG decoding does not leave the GPU
#   waiting); elsewhere `SKINLIB_DATA`, else the SYNTHETIC set.
# - `SKINLIB_SMOKE=1` (or `SMOKE = True` below) turns on *smoke mode*: a few small batches per epoch, enough to run
#   every cell in under a minute on a CPU (25 s measured on a 2-core CPU). Its results mean nothing.
# - The full run on ISIC 2019 (2 + 10 epochs) should take in the order of 15-30 minutes on Colab's T4: an estimate,
#   not a measurement; `fit` prints the seconds and images per second of every epoch.
# - The results (`results.json` and `model.pt`, which notebooks 03-05 read) go to `data.results_dir`: on Drive in
#   Colab.

# %% [setup]

# %%
import json
import os
import platform
from pathlib import Path

import pandas as pd
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

import skinlib
from skinlib.checks import (check_dataset_class, check_evaluate, check_initial_loss, check_train_one_epoch,
                            compare_guess, reference_dataset, use_yours_or)
from skinlib.config import TrainConfig
from skinlib.course import get_data
from skinlib.data import CLASSES, GROUND_TRUTH_CSV, IMAGES_DIR, eval_transform, load_index, train_transform
from skinlib.device import select_device
from skinlib.engine import LoopOptions, evaluate, fit, to_device_batch, train_one_epoch
from skinlib.export import data_fingerprint, export_model
from skinlib.loaders import make_loaders
from skinlib.metrics import ConfusionMatrix, accuracy, balanced_accuracy, per_class, summarize
from skinlib.models import SimpleCNN
from skinlib.plots import plot_confusion, plot_curves, plot_image_grid
from skinlib.splits import grouped_split

print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, skinlib {skinlib.__version__}")
device = select_device()

# %%
MIRROR = None  # an instructor's mirror address, else the official one (see notebook 00)
data = get_data(mirror=os.environ.get("SKINLIB_MIRROR") or MIRROR)  # in Colab: restored from Drive
DATA_DIR, SYNTHETIC = data.data_dir, data.synthetic
SMOKE = os.environ.get("SKINLIB_SMOKE") == "1"

EPOCHS = 2 if SMOKE else 10  # epochs for the fit() run
HAND_EPOCHS = 1 if SMOKE else 2  # epochs for the hand-written loop (it is there to be read)
BATCH_SIZE = 4 if SMOKE else 64
MAX_BATCHES = 2 if SMOKE else None  # None: whole epochs
LR = 1e-4  # Adam's learning rate
RUNS = data.results_dir  # where results are saved (notebook 03 reads them): on Drive in Colab
torch.manual_seed(0)
RUN_NAME = f"SimpleCNN, {'SYNTHETIC data' if SYNTHETIC else DATA_DIR.name}{', SMOKE run' if SMOKE else ''}"
print(f"{'SMOKE mode: ' + str(MAX_BATCHES) + ' batches per epoch' if SMOKE else 'full mode'}")

# %% [markdown]
# ## The input pipeline, written once by hand
# A network eats batches of tensors; the data folder holds a CSV and JPEG files. Three PyTorch pieces connect them:
# - a **`Dataset`**: `len(dataset)` images, and `dataset[i]` gives the i-th as an `(image tensor, label)` pair;
# - **transforms**: what turns an opened image into the tensor the network wants (size, scale, normalisation);
# - a **`DataLoader`**: draws items from the dataset in a random order and stacks them into batches.
#
# The ground-truth CSV has one row per image and one column per class, with 1.0 in the column of its diagnosis:
#
# | image | MEL | NV | BCC | ... |
# | --- | --- | --- | --- | --- |
# | ISIC_0000000 | 0.0 | 1.0 | 0.0 | ... |
#
# so the label, the class's position in `CLASSES`, is the position of the column that holds 1.0.
#
# **Exercise 1.** Finish `LesionDataset`: the labels in `__init__`, and `__getitem__`, which opens image `index`
# with PIL (`Image.open(path).convert("RGB")`: some JPEGs are not RGB), applies `self.transform` and returns the
# pair.

# %%
class LesionDataset(Dataset):
    """The images of an ISIC 2019 folder and their labels, read from its ground-truth CSV."""

    def __init__(self, data_dir, transform):
        table = pd.read_csv(Path(data_dir) / GROUND_TRUTH_CSV)  # image, MEL, NV, ... one 1.0 per row
        self.paths = [Path(data_dir) / IMAGES_DIR / f"{name}.jpg" for name in table["image"]]
        # table[list(CLASSES)] picks the 8 class columns in CLASSES' order (the CSV also has an UNK column);
        # .to_numpy() makes them an array, whose argmax(axis=...) gives the position of the largest value
        # along the axis you choose (0: down each column, 1: along each row); .tolist() gives Python ints.
        # TODO: self.labels: one int per row, the position in CLASSES of the column that holds 1.0
        ### BEGIN SOLUTION
        self.labels = table[list(CLASSES)].to_numpy().argmax(axis=1).tolist()
        ### END SOLUTION
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        # TODO: open image `index` as RGB, apply self.transform, return (image, label)
        ### BEGIN SOLUTION
        image = Image.open(self.paths[index]).convert("RGB")
        return self.transform(image), self.labels[index]
        ### END SOLUTION

# %%
passed = check_dataset_class(LesionDataset, DATA_DIR)
LesionDataset = use_yours_or(reference_dataset, LesionDataset, passed, "ISICDataset")
dataset = LesionDataset(DATA_DIR, transform=eval_transform())
image, label = dataset[0]
print(f"{len(dataset)} images; the first: {tuple(image.shape)} {image.dtype}, label {label} = {CLASSES[label]}")

# %% [markdown]
# ### The transforms
# The evaluation transform makes every image the same, always the same way: shorter side to 256 pixels, the
# central 224x224 square, pixel values scaled to [0, 1], then normalised with ImageNet's mean and standard
# deviation per colour channel (what pretrained networks expect; it also centres the inputs near 0). The training
# transform adds **augmentation**: random crops, flips and turns, so that every epoch shows each lesion a little
# differently, which makes memorising harder. Both are skinlib's, the same in every notebook and in the command line:

# %%
print("training:", train_transform(), "\nevaluation:", eval_transform(), sep="\n")

# %% [markdown]
# What augmentation does: one image, drawn ten times through the training transform. Each view is a random crop of
# half to all of the image, flipped left-right and up-down at random, turned by any angle (the corners it leaves
# are black), its brightness scaled by 0.875 to 1.125 and its saturation by 0.5 to 1.5 (from half to one and a
# half times as colourful: a change you can see in the grid). Dermoscopy has no "up", so flips and turns do not
# change the diagnosis; the hue stays, since colour is a diagnostic cue. The recipe is the one ISIC 2019's
# winners used, minus what an introductory course can leave out (`skinlib.augment.TRAIN_RECIPE`; why: run
# `help(skinlib.augment)` in a new cell).

# %%
augmented = LesionDataset(DATA_DIR, transform=train_transform())
torch.manual_seed(0)
views = [augmented[0] for _ in range(10)]
plot_image_grid(torch.stack([image for image, _ in views]), [label for _, label in views], ncols=5,
                title=f"One image under ten random training augmentations ({DATA_DIR.name}"
                      f"{', SYNTHETIC' if SYNTHETIC else ''})")

# %% [markdown]
# ### A DataLoader
# The `DataLoader` asks the dataset for `batch_size` items (in a random order with `shuffle=True`) and stacks them:
# images become one `(batch, 3, 224, 224)` tensor, labels one `(batch,)` tensor.

# %%
loader = DataLoader(LesionDataset(DATA_DIR, transform=train_transform()), batch_size=BATCH_SIZE, shuffle=True)
images, labels = next(iter(loader))  # training images stay uint8 0-255 here: see the training loop
print(f"{len(loader)} batches; one batch: images {tuple(images.shape)} {images.dtype}, labels {labels.tolist()}")

# %% [markdown]
# From here on `skinlib.loaders.make_loaders` does the same for the three parts of the split, with what a long run
# wants on top: worker processes that decode while the GPU computes, pinned memory, and an image order and
# augmentations that a resumed run replays exactly.

# %% [markdown]
# ## Data: the lesion-grouped split and its loaders
# The split of notebook 00: 70 % train, 15 % validation, 15 % test, grouped by lesion. A `DataLoader` serves each
# part in batches: the training images shuffled and augmented, the others resized and centre-cropped, always the
# same way. On the real data they read the prepared images (see the set-up).

# %%
frame = load_index(DATA_DIR)
split = grouped_split(frame, seed=0)
cache_dir = data.cache_dir  # None for the small synthetic images: decoding them each time is fast enough
config = TrainConfig(data=str(DATA_DIR), out=str(RUNS / "02_simple_cnn"), model="simplecnn",
                     batch_size=BATCH_SIZE, num_workers=0 if SMOKE else None,  # smoke: no worker processes to start
                     cache=None if cache_dir is None else str(cache_dir))
loaders = make_loaders(frame, split, config, device=device)
print({name: f"{len(loader.dataset)} images, {len(loader)} batches" for name, loader in loaders.items()})

# %%
images, labels = next(iter(loaders["train"]))  # uint8 0-255: normalised later, on the GPU (see the training loop)
print(f"one batch: images {tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}: {labels.tolist()}")

# %% [markdown]
# ## The loss
# The network answers with 8 scores (logits) $z_1, \dots, z_8$. **Cross-entropy** turns them into probabilities
# with a softmax and takes minus the log of the probability given to the true class $y$:
#
# $$\ell(z, y) = -\log \frac{e^{z_y}}{\sum_{c=1}^{8} e^{z_c}} ,$$
#
# averaged over the batch: 0 for a confident right answer, large for a confident wrong one.

# %% tags=["nbval-check-output"]
criterion = nn.CrossEntropyLoss()
confident_right = torch.tensor([[0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]])  # class 3 scored far above the rest
print(f"loss of a confident right answer: {criterion(confident_right, torch.tensor([3])).item():.4f}")
print(f"loss of a confident wrong answer: {criterion(confident_right, torch.tensor([5])).item():.4f}")

# %% [markdown]
# **Predict before you run.** An untrained SimpleCNN starts with small random weights, so its 8 scores for an image
# are small and close together. What loss will it have on its first batch? Work it out from the formula, write
# your guess below as a number, then run the next cell (it shows the loss once there is a guess).

# %%
MY_GUESS = None  # your guess for the untrained network's loss on one batch

# %%
torch.manual_seed(0)
untrained = SimpleCNN(num_classes=len(CLASSES)).to(device).eval()
images, labels = to_device_batch(*next(iter(loaders["train"])), device)
with torch.no_grad():
    initial_loss = criterion(untrained(images), labels).item()
if compare_guess(MY_GUESS, initial_loss, "the untrained network's loss", "1.5"):  # a number: show the loss
    passed = check_initial_loss(initial_loss)

# %% [markdown]
# Why that value: scores that are all the same give every class probability 1/8, and the loss of every image is
# then $-\log(1/8) = \ln 8$, whatever the label. A first loss far from it is a bug to find before training
# (summed instead of averaged, unnormalised images, a softmax too many).

# %% tags=["nbval-check-output"]
equal_scores = torch.zeros(1, len(CLASSES))  # the same logit for all 8 classes
print(f"loss of equal scores: {criterion(equal_scores, torch.tensor([3])).item():.4f} (ln 8 = 2.0794)")

# %% [markdown]
# ## The training loop
# One pass over the training images is an *epoch*. For every batch:
# 1. `optimizer.zero_grad()`: PyTorch *adds* new gradients to the old ones, so clear them first;
# 2. `outputs = model(images)`: the forward pass, 8 logits per image;
# 3. `loss = criterion(outputs, labels)`: how wrong it was;
# 4. `loss.backward()`: the gradient of the loss with respect to each of the 108.9 M weights;
# 5. `optimizer.step()`: move every weight a little against its gradient (Adam adapts the step per weight);
# 6. `outputs.argmax(dim=1)`: the predicted class is the one with the highest score;
# 7. `cm.update(...)`: count (true, predicted) pairs in a confusion matrix, from which every score follows.
#
# Before the loop, `model.train()` puts layers that behave differently in training (dropout, batch norm) in their
# training behaviour. `to_device_batch` moves the batch to the GPU and there turns uint8 images (0-255: what the
# training transform and the prepared cache give, a quarter of the bytes of floats to move) into normalised
# floats, where it is cheap.
#
# **Exercise 2.** Write the two missing pieces: the training mode, and steps 1-5.

# %%
def train_one_epoch_by_hand(model, loader, optimizer, criterion):
    # TODO: put the model in training mode
    ### BEGIN SOLUTION
    model.train()
    ### END SOLUTION
    cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
    for step, (images, labels) in enumerate(loader):
        if step == MAX_BATCHES:
            break
        images, labels = to_device_batch(images, labels, device)
        # Name them `outputs` and `loss`: the two lines after the exercise use them.
        # TODO: steps 1-5: zero the gradients, outputs, loss, backward, optimizer step
        ### BEGIN SOLUTION
        optimizer.zero_grad()
        outputs = model(images)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        ### END SOLUTION
        cm.update(outputs.argmax(dim=1), labels)
        loss_sum += loss.item() * len(labels)  # .item() waits for the GPU: fine here, fit() avoids it
    return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm), "balanced_accuracy": balanced_accuracy(cm)}

# %% [markdown]
# The check runs your function on a tiny network and the same small batch twice, once as uint8 and once as
# normalised floats (the two kinds the loaders give): it must switch on training mode, zero the gradients (both
# steps must see the same gradient, not twice it), step once per batch, and drive the loss down when it trains 30
# times on one small batch (a network that cannot overfit one batch has a bug).

# %%
passed = check_train_one_epoch(train_one_epoch_by_hand, device=device)


def skinlib_train_one_epoch(model, loader, optimizer, criterion):  # cross-entropy, like `criterion`
    return train_one_epoch(model, loader, optimizer, device, options=LoopOptions(progress=False, max_batches=MAX_BATCHES))


train_one_epoch_by_hand = use_yours_or(skinlib_train_one_epoch, train_one_epoch_by_hand, passed, "train_one_epoch")
try_it = torch.optim.SGD(untrained.parameters(), lr=1e-3)  # one step on one batch, to try it
tried = train_one_epoch_by_hand(untrained, [next(iter(loaders["train"]))], try_it, criterion)
print({key: round(tried[key], 3) for key in ("loss", "accuracy", "balanced_accuracy")})

# %% [markdown]
# ## The test loop
# The same forward pass, without the learning: `model.eval()` switches layers to inference behaviour and
# `torch.no_grad()` skips the bookkeeping that `backward` would need, which saves memory and time. The loss of the
# test set is the mean over its images, so each batch's mean loss counts as many times as the batch has images.
#
# **Exercise 3.** Write the test loop: evaluation mode, then without gradients, for every batch (stop at
# `MAX_BATCHES`, as above): move it with `to_device_batch`, as the training loop does, compute the outputs, add
# the batch's loss times its size to `loss_sum`, and update `cm` with the predictions. The check feeds it one
# uint8 batch (as the prepared cache gives them) and one float batch (as the JPEGs give them): both must work.

# %%
def evaluate_by_hand(model, loader, criterion):
    cm, loss_sum = ConfusionMatrix(len(CLASSES)), 0.0
    # TODO: model.eval(), then a loop over the loader inside `with torch.no_grad():`
    ### BEGIN SOLUTION
    model.eval()
    with torch.no_grad():
        for step, (images, labels) in enumerate(loader):
            if step == MAX_BATCHES:
                break
            images, labels = to_device_batch(images, labels, device)
            outputs = model(images)
            loss_sum += criterion(outputs, labels).item() * len(labels)
            cm.update(outputs.argmax(dim=1), labels)
    ### END SOLUTION
    return {"loss": loss_sum / cm.total, "accuracy": accuracy(cm), "balanced_accuracy": balanced_accuracy(cm)}

# %%
passed = check_evaluate(evaluate_by_hand, device=device)


def skinlib_evaluate(model, loader, criterion):  # cross-entropy, like `criterion`
    return evaluate(model, loader, device, options=LoopOptions(progress=False, max_batches=MAX_BATCHES))


evaluate_by_hand = use_yours_or(skinlib_evaluate, evaluate_by_hand, passed, "evaluate")
tried = evaluate_by_hand(untrained, [next(iter(loaders["val"]))], criterion)
print({key: round(tried[key], 3) for key in ("loss", "accuracy", "balanced_accuracy")})

# %% [markdown]
# ## Train
# After each epoch we evaluate on the **validation** part. The original report plotted *test* accuracy after every
# epoch (its Figure 1); but a test set that is looked at while deciding things (when to stop, which learning rate)
# stops being a fair test. So: watch validation during training, test once at the end.

# %%
model = SimpleCNN(num_classes=len(CLASSES)).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=LR)
hand_history = []
for epoch in range(1, HAND_EPOCHS + 1):
    train = train_one_epoch_by_hand(model, loaders["train"], optimizer, criterion)
    val = evaluate_by_hand(model, loaders["val"], criterion)
    hand_history.append({"epoch": epoch, **{f"train_{k}": v for k, v in train.items()},
                         **{f"val_{k}": v for k, v in val.items()}})
    print(f"epoch {epoch}: train loss {train['loss']:.3f} acc {train['accuracy']:.3f} | "
          f"val loss {val['loss']:.3f} acc {val['accuracy']:.3f} bal {val['balanced_accuracy']:.3f}")

# %% [markdown]
# ## The same with `skinlib.engine.fit`
# `fit` runs exactly these steps (run `train_one_epoch??` in a new cell to read its code beside the cell above),
# plus what a GPU run needs: mixed precision (16-bit arithmetic where it is safe; on a T4 it is often quoted as up
# to about twice as fast, an estimate that this kit has not measured), no GPU waits inside the loop, a progress
# bar, one line per epoch, and optionally a checkpoint after every epoch. It uses the model and optimizer it is
# given; it never builds its own.
#
# A fresh network, trained for `EPOCHS` epochs:

# %%
torch.manual_seed(0)
model = SimpleCNN(num_classes=len(CLASSES)).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=LR)
history = fit(model, loaders, optimizer, device, epochs=EPOCHS,
              config=config.replace(grad_clip=None, max_batches=MAX_BATCHES))  # no clipping, like the loop above

# %% [markdown]
# ## Learning curves
# Accuracy and loss per epoch, on the training and validation parts. What to look for:
# - both improving: the network is learning; more epochs may help;
# - training accuracy climbing towards 100 % while validation stalls or its loss rises: **over-fitting**, the
#   network memorises the training images. SimpleCNN's 108.9 M weights, 99 % of them in fc1, make it quick to do this;
# - validation accuracy stuck at the share of NV: the network has learned to answer NV (see below).

# %%
plot_curves(history, title=f"Learning curves: {RUN_NAME}")

# %% [markdown]
# ## Test, once
# Now, and only now, the test part: images of lesions the network has never seen in any form.

# %%
test = evaluate(model, loaders["test"], device, options=LoopOptions(max_batches=MAX_BATCHES))
print(f"test: accuracy {test['accuracy']:.3f}, balanced accuracy {test['balanced_accuracy']:.3f} "
      f"on {test['images']} images{' of SYNTHETIC data' if SYNTHETIC else ''}{' (SMOKE run)' if SMOKE else ''}")

# %% [markdown]
# ## The confusion matrix
# Row = the true class, column = the predicted class; the diagonal holds the right answers. The *normalised* view
# divides each row by its total, so the diagonal shows each class's **recall**: the share of, say, melanomas that
# were called melanoma. With $\mathrm{TP}_c$ the images of class $c$ predicted as $c$ and $\mathrm{FN}_c$ those
# of class $c$ predicted as something else,
#
# $$\mathrm{recall}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FN}_c} .$$
#
# A class with no image in the test set has no recall: its row shows dashes. Look for: a bright NV column
# (everything called NV), and which classes MEL is confused with.

# %%
plot_confusion(test["confusion"], classes=CLASSES, title=f"Test set: {RUN_NAME}")

# %% [markdown]
# ## Why accuracy misleads here
# Half the images are NV. A "classifier" that answers NV for every image, without looking, scores the share of NV
# as its accuracy. **Balanced accuracy** is the mean recall over the classes $C$ present in the test set (as
# scikit-learn's `balanced_accuracy_score` computes it; a class with no test image is left out, not counted as 0):
#
# $$\text{balanced accuracy} = \frac{1}{|C|} \sum_{c \in C} \mathrm{recall}_c .$$
#
# "Always NV" recalls NV perfectly and every other class not at all: 1/8 = 12.5 % when all 8 classes are present.
# On the real ISIC 2019 class counts:

# %% tags=["nbval-check-output"]
REAL_COUNTS = {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624, "DF": 239, "VASC": 253, "SCC": 628}
truth = torch.cat([torch.full((n,), CLASSES.index(name)) for name, n in REAL_COUNTS.items()])
always_nv = ConfusionMatrix(len(CLASSES)).update(torch.full_like(truth, CLASSES.index("NV")), truth)
print(f"always NV on the {len(truth):,} ISIC 2019 images: accuracy {100 * accuracy(always_nv):.1f} %, "
      f"balanced accuracy {100 * balanced_accuracy(always_nv):.1f} %")

# %% [markdown]
# And on the test images our network was scored on (in smoke mode only the first few batches of the test set),
# "always NV" against SimpleCNN:

# %%
scored = test["confusion"].matrix.sum(dim=1)  # the rows: how many test images of each class were scored
test_labels = torch.repeat_interleave(torch.arange(len(CLASSES)), scored)
baseline = ConfusionMatrix(len(CLASSES)).update(torch.full_like(test_labels, CLASSES.index("NV")), test_labels)
comparison = pd.DataFrame({"always NV": [accuracy(baseline), balanced_accuracy(baseline)],
                           "SimpleCNN": [test["accuracy"], test["balanced_accuracy"]]},
                          index=["accuracy", "balanced accuracy"])
comparison.round(3)

# %% [markdown]
# If SimpleCNN's accuracy is near the "always NV" column while its balanced accuracy is well above 12.5 %, it has
# learned something beyond the majority class. Per class, precision is "when it says MEL, how often is it MEL" and
# recall is "of the MELs, how many did it find". A dash is a score with nothing to divide by: no recall for a class
# with no test image (support 0), no precision for a class never predicted, as in the confusion matrix.

# %%
scores = per_class(test["confusion"])  # NaN where a score is undefined, shown as a dash
table = pd.DataFrame({key: scores[key] for key in ("precision", "recall", "f1", "support")}, index=CLASSES)
table.style.format(precision=3, na_rep="–")

# %% [markdown]
# ## Save the results
# Notebook 03 compares ResNet-50 with these numbers; notebooks 04 and 05 load the model.

# %%
results = {"model": "SimpleCNN", "data": str(DATA_DIR), "data_id": data.data_id, "synthetic": SYNTHETIC,
           "smoke": SMOKE,
           "history": history, "test": summarize(test["confusion"], classes=CLASSES)}
(RUNS / "02_simple_cnn").mkdir(parents=True, exist_ok=True)
(RUNS / "02_simple_cnn" / "results.json").write_text(json.dumps(results, indent=2))
export_model(RUNS / "02_simple_cnn" / "model.pt", model, "simplecnn",  # notebooks 04 and 05 load it
             data={"fingerprint": data_fingerprint(frame, split)})
print(f"saved to {RUNS / '02_simple_cnn'}")

# %% [markdown]
# ## Data licence and citations
# The ISIC 2019 images are licensed CC BY-NC 4.0 by the International Skin Imaging Collaboration. Any use must cite:
# - BCN_20000: Combalia M, et al. "BCN20000: Dermoscopic Lesions in the Wild", arXiv:1908.02288, 2019.
# - HAM10000: Tschandl P, Rosendahl C, Kittler H. "The HAM10000 dataset, a large collection of multi-source
#   dermatoscopic images of common pigmented skin lesions", Sci. Data 5, 180161, 2018.
# - MSK: Codella N, et al. "Skin Lesion Analysis Toward Melanoma Detection: A Challenge at the 2017 ISBI",
#   arXiv:1710.05006, 2017.
#
# ## What to try next
# 1. **Learning rate.** Train with `LR = 7e-4` (the ResNet-50 recipe of notebook 03) and `LR = 1e-5`. Which curve
#    tells you the rate is too high? Too low?
# 2. **Class weights.** `nn.CrossEntropyLoss(weight=w)` with `w` proportional to 1 / (images of the class) makes a
#    rare class's mistakes cost more. Does balanced accuracy go up? What happens to accuracy?
# 3. **Over-fitting.** Train for 20 epochs and find the epoch where validation loss starts to rise. What would you
#    keep: the last epoch's weights or that epoch's?
# 4. **Batch size.** Train with `BATCH_SIZE = 16` and `BATCH_SIZE = 128` for the same number of epochs. Which learns
#    faster per epoch, which per second? (On a GPU, watch the img/s column of `fit`'s summary lines.)
#
# Next: **03_resnet50_transfer_learning** starts from a network that has already seen 1.2 million images.
