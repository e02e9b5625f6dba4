# %% [markdown]
# # 03 — Transfer learning with ResNet-50
#
# {{BADGE}}
#
# SimpleCNN learned from ISIC 2019 alone, starting from random weights. ResNet-50 is a 50-layer network that has
# already been trained on ImageNet: 1.2 million photographs of 1000 kinds of everyday objects. Its early layers
# detect edges, textures and shapes that are useful for skin lesions too. *Transfer learning* keeps those layers and
# teaches the network a new last layer for our 8 classes.
#
# **You will learn**
# - what is inside ResNet-50: residual blocks, bottlenecks, batch normalisation, global average pooling;
# - to load a pretrained network, replace its 1000-class head with an 8-class one and freeze the rest;
# - the training recipe of the original report: Adam, weight decay, gradient clipping, a one-cycle learning rate;
# - the two ways to transfer: *feature extraction* (freeze the pretrained layers, train the head) and *fine-tuning*
#   (train everything);
# - parameter groups: a higher learning rate for the new head than for the pretrained layers (as d2l fine-tunes);
# - the learning-rate range test (fastai's `lr_find`): where the loss falls fastest, and where it blows up;
# - to compare the models fairly, on a lesion-grouped test set, with balanced accuracy beside accuracy, and to pick
#   the best epoch by validation balanced accuracy.
#
# **A lab: four exercises**, each a little harder than the last: the new head (1), parameter groups (2), a learning
# rate read from a range test (3), the best epoch (4). A cell marked *Exercise* only defines a function, so running
# it never stops the notebook; the check cell after it runs your function and says whether it is right, what to look
# at, or that it is "not done yet". Until it passes, the cells below use skinlib's own version, so the notebook runs
# to the end at any time (Colab: Runtime > Run all).
#
# **Study time:** about 1.5 hours to read, answer the exercises and look at the results, plus the training run
# (below).

# %% [markdown]
# ## Set-up
# - In Colab, first **File > Save a copy in Drive**, and work in that copy: a notebook opened from its badge is not
#   saved, so your answers would be lost with the runtime.
# - **Run time.** A minute or two in smoke mode on a CPU. The full run on ISIC 2019
#   (5 epochs frozen, 25 fine-tuning) should take in the order of 30-60 minutes on Colab's T4: an estimate, not a
#   measurement; `fit` prints the seconds and images per second of every epoch.
# - **Checkpoints and resume.** A Colab runtime can disconnect, and its disk goes with it. `fit` writes a checkpoint
#   after every epoch (weights, optimizer, schedule, random states, history); in Colab both runs put theirs in the
#   course's Drive folder (`data.results_dir`), in a folder named after the data, so a checkpoint of other data is
#   never resumed. After a disconnect, reconnect and run the notebook again from the top with the same settings:
#   each run resumes after its last finished epoch (a finished run is loaded, not trained again). To start a run
#   over, delete its checkpoint. Only checkpoints and results go to Drive; the prepared images stay on local disk.
# - **Folders.** `03_frozen` (feature extraction) and `03_resnet50` (fine-tuning, with the `model.pt` that
#   notebooks 04 and 05 load). A smoke run's files say so, and a full run does not use them.

# %% [setup]

# %%
import json
import os
import platform

import pandas as pd
import torch
import torchvision
from torch import nn

import skinlib
from skinlib.checks import (check_best_epoch, check_lr_suggestion, check_parameter_groups, check_resnet_head,
                            compare_guess, reference_best_epoch, reference_parameter_groups, use_yours_or)
from skinlib.config import TrainConfig
from skinlib.course import get_data
from skinlib.data import CLASSES, load_index
from skinlib.device import select_device
from skinlib.engine import LoopOptions, evaluate, fit
from skinlib.export import data_fingerprint, export_model
from skinlib.loaders import make_loaders
from skinlib.lr_range import lr_range_test, plot_lr_range
from skinlib.lr_range import suggest_lr as reference_suggest_lr
from skinlib.metrics import per_class, summarize
from skinlib.models import count_parameters, imagenet_state_dict, new_head
from skinlib.models import resnet50 as skinlib_resnet50
from skinlib.plots import plot_confusion, plot_curves, plot_one_cycle
from skinlib.splits import grouped_split
from skinlib.storage.checkpoint import CheckpointPlan

print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, skinlib {skinlib.__version__}")
device = select_device()

# %% [markdown]
# ## Parameters
# The defaults are the report's recipe: 25 epochs of Adam at a peak learning rate of 7e-4 with weight decay 1.5e-4,
# gradients clipped at 0.1, batches of 64. `SKINLIB_SMOKE=1` makes it a quick run of a few tiny batches, and
# `SKINLIB_PRETRAINED=0` starts from random weights instead of ImageNet's (for machines without internet; the
# course's tests do this), which is no longer transfer learning.

# %%
MIRROR = None  # an instructor's mirror address, else the official one (see notebook 00)
data = get_data(mirror=os.environ.get("SKINLIB_MIRROR") or MIRROR)  # in Colab: restored from Drive
DATA_DIR, SYNTHETIC = data.data_dir, data.synthetic
SMOKE = os.environ.get("SKINLIB_SMOKE") == "1"
PRETRAINED = os.environ.get("SKINLIB_PRETRAINED", "1") != "0"

EPOCHS = 2 if SMOKE else 25  # fine-tuning, the report's recipe
FROZEN_EPOCHS = 1 if SMOKE else 5  # feature extraction: trains only the head, so it settles quickly
BATCH_SIZE = 4 if SMOKE else 64
MAX_BATCHES = 2 if SMOKE else None
RUNS = data.results_dir  # on Drive in Colab: notebook 02's results, this notebook's checkpoints
FINETUNED_DIR = RUNS / "03_resnet50"  # checkpoint, results and model.pt (notebooks 04 and 05 load it)
FROZEN_DIR = RUNS / "03_frozen"  # the feature-extraction run's checkpoint
RESUME = data.drive_dir is not None  # on Drive: a run of the notebook continues the last one
RUN_NAME = f"{'SYNTHETIC data' if SYNTHETIC else DATA_DIR.name}{', SMOKE run' if SMOKE else ''}" + \
    ("" if PRETRAINED else ", RANDOM initial weights")  # on every figure's title
torch.manual_seed(0)
print(f"{'SMOKE mode: ' + str(MAX_BATCHES) + ' batches per epoch' if SMOKE else 'full mode'}; checkpoints in "
      f"{FROZEN_DIR} and {FINETUNED_DIR}{' (resumed if they exist)' if RESUME else ''}")
if not PRETRAINED:
    print("SKINLIB_PRETRAINED=0: ResNet-50 starts from RANDOM weights, not ImageNet's. "
          "The results below say nothing about transfer learning.")

# %% [markdown]
# ## Data
# The same lesion-grouped split as notebooks 00 and 02 (same seed, same split). On the real data the images are
# read from the prepared cache on local disk that `get_data` made (notebook 02 explains why). `TrainConfig` holds the
# recipe: its defaults are the report's settings.

# %%
frame = load_index(DATA_DIR)
split = grouped_split(frame, seed=0)
cache_dir = data.cache_dir
config = TrainConfig(data=str(DATA_DIR), out=str(FINETUNED_DIR), model="resnet50", epochs=EPOCHS,
                     batch_size=BATCH_SIZE, pretrained=PRETRAINED, max_batches=MAX_BATCHES,
                     num_workers=0 if SMOKE else None,  # smoke: no worker processes to start
                     cache=None if cache_dir is None else str(cache_dir))
loaders = make_loaders(frame, split, config, device=device)
print(f"recipe: Adam lr {config.lr}, weight decay {config.weight_decay}, gradient clip {config.grad_clip}, "
      f"epochs {config.epochs}, batch size {config.batch_size}")

# %% [markdown]
# ## A pretrained ResNet-50
# The report wrote `model = torchvision.models.resnet50(pretrained=True)`; today's torchvision spells it
# `resnet50(weights="IMAGENET1K_V1")`, the same ImageNet weights. We build the architecture and load those weights
# with `skinlib.models.imagenet_state_dict`, which downloads them once (about 100 MB) into the cache torchvision
# uses, and gives up with a clear message instead of hanging when there is no network.

# %%
model = torchvision.models.resnet50()  # the architecture, random weights
if PRETRAINED:
    model.load_state_dict(imagenet_state_dict("IMAGENET1K_V1"))
print(f"ImageNet weights: {'loaded' if PRETRAINED else 'NOT loaded (random initialisation)'}")

# %% [markdown]
# ## What is inside ResNet-50
# SimpleCNN stacked two convolutions; ResNet-50 stacks 49 on its main path (the first one, then 16 blocks of 3),
# plus 4 `downsample` convolutions on skip connections: 53 in all. The 49 and the final `fc` layer are the 50 of
# its name. Three ideas make that depth trainable:
# - **Batch normalisation** (`BatchNorm2d`, after every convolution): each channel is shifted and scaled to mean 0
#   and variance 1 over the batch, then by two learned numbers. The next layer always sees inputs of a similar
#   scale, so training tolerates larger learning rates. In evaluation mode it uses running averages kept during
#   training instead of the batch's own statistics (one reason for `model.eval()`).
# - **Residual blocks**: a block computes $F(x)$ and outputs $\mathrm{ReLU}(x + F(x))$. The "skip connection"
#   $x$ lets the gradient flow straight back through dozens of blocks, and a block that has nothing useful to add
#   can learn $F(x) \approx 0$.
# - **Bottlenecks**: a block is a 1x1 conv that narrows the channels, a 3x3 conv on the narrow ones, and a 1x1
#   conv that widens them 4 times: in layer1, 256 -> 64, 64 -> 64, 64 -> 256, so the expensive 3x3 convolution
#   works on 4 times fewer channels. The first block of a stage also changes the width (or the size) of $x$, so
#   a 1x1 convolution on the skip connection (`downsample`) reshapes $x$ to be added. That is the block printed
#   below: it receives the stem's 64 channels, so its first 1x1 is 64 -> 64 and its `downsample` 64 -> 256;
#   layer1's two other blocks take 256 channels and have no `downsample`.
# - **Global average pooling** at the end: each of the 2048 final 7x7 feature maps is averaged to one number, so
#   the head sees 2048 values whatever the image size. SimpleCNN's flatten gave fc1 89,888 values instead.
#
# Its first bottleneck block, as PyTorch lists it, then the shape after each stage for one 224x224 image:

# %%
print(model.layer1[0])

# %% tags=["nbval-check-output"]
x = torch.zeros(1, 3, 224, 224)
with torch.no_grad():
    for name in ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]:
        x = getattr(model.eval(), name)(x)
        blocks = f"{len(getattr(model, name))} bottleneck blocks" if name.startswith("layer") else ""
        print(f"after {name:8} {str(tuple(x.shape)):18} {blocks}".rstrip())
print(f"flatten -> {tuple(x.flatten(1).shape)} -> fc (ImageNet's head: {model.fc.out_features} classes)")

# %% [markdown]
# ## A new head for 8 classes, and a frozen backbone
# ImageNet's head, `fc`, maps those 2048 features to ImageNet's 1000 classes. We replace it with a fresh
# `nn.Linear(2048, 8)`: the report's one line of transfer learning. Everything before it, the *backbone*, stays
# as ImageNet trained it.
#
# The new head **starts random**: nobody has trained a layer from ImageNet's features to our 8 classes. Its first
# gradients are therefore large and noisy, which is why the learning rate starts low (below).
#
# *Feature extraction* goes one step further and **freezes** the backbone: `requires_grad = False` on a parameter
# tells PyTorch not to compute its gradient, and the optimizer only receives the trainable ones. Only the head
# learns, the backbone is a fixed feature extractor: fast (no gradients through 50 layers) and hard to over-fit,
# but ImageNet's features were made for cats and cars, not dermoscopy.
#
# **Predict before you run.** With the backbone frozen and an 8-class head, how many parameters are left to
# train? (Hint: the head is a 2048 x 8 weight matrix plus one bias per class.) Write your guess below.

# %%
MY_GUESS = None  # your guess for the number of trainable parameters

# %% [markdown]
# **Exercise 1.** Write `replace_head_and_freeze`: freeze every parameter of `model`, then give it a new
# `nn.Linear` head from 2048 features to `len(CLASSES)` classes (a new layer's parameters are trainable), and
# return the model.

# %%
def replace_head_and_freeze(model):
    # TODO: requires_grad = False on every parameter, then model.fc = a new 2048 -> 8 nn.Linear
    ### BEGIN SOLUTION
    for parameter in model.parameters():
        parameter.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, len(CLASSES))  # new parameters: trainable
    ### END SOLUTION
    return model

# %%
passed = check_resnet_head(replace_head_and_freeze)


def skinlib_replace_head_and_freeze(model):
    return new_head(model, len(CLASSES), freeze_backbone=True)


replace_head_and_freeze = use_yours_or(skinlib_replace_head_and_freeze, replace_head_and_freeze, passed,
                                       "new_head(..., freeze_backbone=True)")

# %% [markdown]
# The ImageNet model above, given the new head and frozen (the training below starts from fresh copies):

# %% tags=["nbval-check-output"]
print(f"ImageNet head: {model.fc}")
print(f"parameters with the 1000-class head: {count_parameters(model):>11,}")
model = replace_head_and_freeze(model)
print(f"new head:      {model.fc}")
print(f"parameters with the 8-class head:    {count_parameters(model):>11,}")
print(f"trainable (the new head):            {count_parameters(model, trainable_only=True):>11,}")

# %%
compare_guess(MY_GUESS, count_parameters(model, trainable_only=True), "the trainable parameters", "25_000")

# %% [markdown]
# 23.5 million parameters: 22 % of SimpleCNN's 108.9 million, spread over 50 layers instead of piled into one.
#
# ## The recipe, written out
# - **Adam** with **weight decay** 1.5e-4: every step also pulls the weights slightly towards zero, a brake on
#   over-fitting.
# - **Gradient clipping** at 0.1: each gradient element is clipped to [-0.1, 0.1] before the step, so one odd batch
#   cannot throw the weights far.
# - **One-cycle learning rate** (`OneCycleLR`): the rate climbs from 7e-4 / 25 to 7e-4 over the first 30 % of the
#   steps, then decays to almost 0. **Why start low:** the head is random, so its first gradients are large and
#   point anywhere; at full rate they would also drag the pretrained weights (in fine-tuning) far from what
#   ImageNet taught them. Low at first, the head settles before the rate rises. Ending low lets the weights settle.
#   The schedule is stepped after every batch.
#
# ### Parameter groups: a higher rate for the new head
# The report gives every parameter the same rate. But the pretrained layers need only small corrections, while the
# random head has everything to learn. An optimizer takes *parameter groups*, a list of dicts each with its own
# settings: `torch.optim.Adam([{"params": backbone, "lr": lr}, {"params": head, "lr": 10 * lr}])`. d2l's
# fine-tuning chapter gives the new output layer 10 times the rate of the rest.
#
# **Exercise 2.** Write `parameter_groups(model, lr, head_factor)`: two groups, the trainable parameters of the
# backbone at `lr`, and those of the head (names starting with `fc.`, from `model.named_parameters()`) at
# `lr * head_factor`. Hand the optimizer only parameters that are trainable (`p.requires_grad`).

# %%
def parameter_groups(model, lr, head_factor):
    # TODO: [{"params": backbone's trainable parameters, "lr": lr}, {"params": fc's, "lr": lr * head_factor}]
    ### BEGIN SOLUTION
    head = [p for name, p in model.named_parameters() if name.startswith("fc.") and p.requires_grad]
    backbone = [p for name, p in model.named_parameters() if not name.startswith("fc.") and p.requires_grad]
    return [{"params": backbone, "lr": lr}, {"params": head, "lr": lr * head_factor}]
    ### END SOLUTION

# %%
passed = check_parameter_groups(parameter_groups)
parameter_groups = use_yours_or(reference_parameter_groups, parameter_groups, passed, "parameter groups")

# %% [markdown]
# `train_with_recipe` below is the report's recipe written out. By default it keeps the report's single rate;
# `head_factor=10` trains with your two groups instead (one of the things to try at the end), and the one-cycle
# schedule then climbs to each group's own peak.

# %%
STEPS_PER_EPOCH = min(len(loaders["train"]), MAX_BATCHES or len(loaders["train"]))  # batches per epoch of this run


def train_with_recipe(model, config, checkpoint=None, resume=False, head_factor=None):
    model = model.to(device)
    if head_factor is None:  # the report's recipe: one rate for every trainable parameter
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    else:
        groups = parameter_groups(model, config.lr, head_factor)
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                    total_steps=config.epochs * STEPS_PER_EPOCH)
    return fit(model, loaders, optimizer, device, epochs=config.epochs, scheduler=scheduler,
               checkpoint=CheckpointPlan(checkpoint, resume) if checkpoint else None, config=config)

# %% [markdown]
# The learning rate of every step of the fine-tuning run below, with the same scheduler on a throw-away optimizer
# (a smoke run takes only a few steps, so it shows the full run's instead). `OneCycleLR` also cycles Adam's
# `beta1` (its momentum), the other way round: from 0.95 down to 0.85 while the rate climbs, and back to 0.95 as
# it falls (`cycle_momentum=True`, its default), so a high rate comes with less momentum.

# %%
plot_one_cycle(config, len(loaders["train"].dataset), smoke=SMOKE, synthetic=SYNTHETIC)

# %% [markdown]
# ### Is 7e-4 a sensible peak? A learning-rate range test
# Where did 7e-4 come from? The *range test* (Smith, 2017; fastai's `lr_find`, used throughout fastbook) trains a
# fresh copy for a few dozen batches while the rate grows exponentially, from 1e-7 to 10, and records the loss
# after each batch (smoothed). At tiny rates nothing happens; then the loss falls, faster and faster; then the
# rate is too large and the loss shoots up (the test stops there). `skinlib.lr_range.lr_range_test` runs it and
# puts the weights back afterwards.

# %%
probe = skinlib_resnet50(num_classes=len(CLASSES), pretrained=PRETRAINED).to(device)
range_test = lr_range_test(probe, loaders["train"], device, steps=2 if SMOKE else 100,
                           weight_decay=config.weight_decay)
del probe
print(f"{len(range_test['lr'])} steps, rates {range_test['lr'][0]:.1e} to {range_test['lr'][-1]:.1e}"
      f"{' (SMOKE run: a few steps, the curve means nothing)' if SMOKE else ''}")

# %% [markdown]
# **Exercise 3.** Write `suggest_lr(result)`: `result` is the test's dict, `result["lr"]` the rates and
# `result["loss"]` the smoothed loss after each. Return fastai's "minimum / 10" suggestion: a tenth of the rate
# at which the loss was lowest. (At the minimum itself the loss is about to turn up; a tenth of it is still on the
# falling slope.)

# %%
def suggest_lr(result):
    # TODO: a tenth of the rate (result["lr"]) at which the loss (result["loss"]) was lowest
    ### BEGIN SOLUTION
    lowest = min(range(len(result["loss"])), key=lambda step: result["loss"][step])
    return result["lr"][lowest] / 10
    ### END SOLUTION

# %%
passed = check_lr_suggestion(suggest_lr)
suggest_lr = use_yours_or(reference_suggest_lr, suggest_lr, passed, "suggest_lr (skinlib.lr_range)")

# %%
suggested = suggest_lr(range_test)
plot_lr_range(range_test, suggested, title=f"Range test, ResNet-50: {RUN_NAME}")

# %%
print(f"suggested peak rate {suggested:.1e}; the report's: {config.lr:.0e}"
      f"{' (SMOKE run: the suggestion means nothing)' if SMOKE else ''}")

# %% [markdown]
# The suggestion is a starting point, not a law: the test runs a few batches of one configuration. If yours is
# far from 7e-4, try it (in a new folder) and compare validation balanced accuracy.

# %% [markdown]
# ## 1. Feature extraction: freeze the backbone
# A fresh ImageNet ResNet-50 through your `replace_head_and_freeze`; only the head learns.

# %%
frozen = replace_head_and_freeze(skinlib_resnet50(num_classes=1000, pretrained=PRETRAINED))

# %% tags=["nbval-check-output"]
print(f"trainable: {count_parameters(frozen, trainable_only=True):,} of {count_parameters(frozen):,} parameters")

# %%
frozen_history = train_with_recipe(frozen, config.replace(epochs=FROZEN_EPOCHS, out=str(FROZEN_DIR)),
                                   checkpoint=FROZEN_DIR / "checkpoint.pt", resume=RESUME)
frozen_test = evaluate(frozen, loaders["test"], device, options=LoopOptions(max_batches=MAX_BATCHES))

# %% [markdown]
# One subtlety: in training mode the batch-normalisation layers still update their running averages on our images,
# even with frozen weights. Keeping those fixed too would need the batch-norm layers in eval mode during training;
# `fit` puts the whole model in training mode, so that takes a training loop of your own (notebook 02's, say).
#
# ## 2. Fine-tuning: train everything
# All 23.5 M parameters learn, starting from ImageNet's values: slower, and the network can adapt its features to
# dermoscopy. This is the report's method, and the long run of the course. Once trained, the model alone goes to
# `model.pt` beside it, for notebooks 04 and 05.

# %%
finetuned = skinlib_resnet50(num_classes=len(CLASSES), pretrained=PRETRAINED)
history = train_with_recipe(finetuned, config, checkpoint=FINETUNED_DIR / "checkpoint.pt", resume=RESUME)
test = evaluate(finetuned, loaders["test"], device, options=LoopOptions(max_batches=MAX_BATCHES))
model_path = export_model(FINETUNED_DIR / "model.pt", finetuned, "resnet50",
                          data={"fingerprint": data_fingerprint(frame, split)}, smoke=SMOKE)
print(f"saved for notebooks 04 and 05: {model_path}")

# %% [markdown]
# ## Learning curves
# The report's Figure 3 showed these for its fine-tuning run. Compare with SimpleCNN's in notebook 02: a pretrained
# network usually starts higher and climbs faster. In a full run, watch the gap between training and validation open
# up in the later epochs, and the loss drop as the one-cycle schedule lowers the learning rate at the end.

# %%
plot_curves(history, title=f"ResNet-50, fine-tuned: {RUN_NAME}")

# %% [markdown]
# And the feature-extraction run (frozen backbone, only the head trained): it usually starts lower and flattens
# sooner, since only 16,392 parameters learn.

# %%
plot_curves(frozen_history, title=f"ResNet-50, frozen backbone: {RUN_NAME}")

# %% [markdown]
# ## Which epoch was best?
# `fit` returns the last epoch's weights, but the last epoch need not be the best one: the validation score can
# peak and then fall as the network over-fits. The split has a validation part for this choice (the test part is
# kept for the one final measurement). The course picks the epoch by **validation balanced accuracy**, not loss or
# plain accuracy: it is the score we report, and it weighs the rare classes as much as NV.
#
# **Exercise 4.** Write `best_epoch(history)`: `history` is `fit`'s list of rows, one per epoch, each a dict with
# `"epoch"` (counting from 1) and `"val_balanced_accuracy"` among others. Return the `"epoch"` of the row with the
# highest validation balanced accuracy; on a tie, the earlier epoch (it reached the score with less training).

# %%
def best_epoch(history):
    # TODO: the "epoch" of the row with the highest "val_balanced_accuracy" (the earlier one on a tie)
    ### BEGIN SOLUTION
    best = max(history, key=lambda row: row["val_balanced_accuracy"])  # max keeps the first of equals
    return best["epoch"]
    ### END SOLUTION

# %%
passed = check_best_epoch(best_epoch)
best_epoch = use_yours_or(reference_best_epoch, best_epoch, passed, "best epoch")

# %%
best = best_epoch(history)
row = next(r for r in history if r["epoch"] == best)
print(f"fine-tuning: best validation balanced accuracy {row['val_balanced_accuracy']:.3f} at epoch {best} of "
      f"{len(history)}; the last epoch's: {history[-1]['val_balanced_accuracy']:.3f}"
      f"{' (SMOKE run: the numbers mean nothing)' if SMOKE else ''}")

# %% [markdown]
# The model saved for notebooks 04 and 05 is the last epoch's. With a one-cycle schedule the last epochs run at
# the lowest rates and usually hold the best weights; if yours peaked much earlier, train again with
# `EPOCHS = best` (the schedule then fits the shorter run) in a new folder, and compare on the test split once.

# %% [markdown]
# ## Confusion matrix and per-class recall of the fine-tuned network
# The diagonal of the normalised matrix is each class's recall. Look at MEL's row first: what share of melanomas
# does the network find, and what does it mistake the others for? Then the rare classes, DF and VASC.

# %%
plot_confusion(test["confusion"], classes=CLASSES, title=f"Test set, ResNet-50 fine-tuned: {RUN_NAME}")

# %%
recall = pd.DataFrame({"feature extraction": per_class(frozen_test["confusion"])["recall"],
                       "fine-tuning": per_class(test["confusion"])["recall"],
                       "test images": per_class(test["confusion"])["support"]}, index=CLASSES)
recall.style.format(precision=3, na_rep="–")  # a dash: no test image of that class, so no recall

# %% [markdown]
# ## SimpleCNN against ResNet-50
# The report's test accuracies were 65.8 % for SimpleCNN and 83.22 % for ResNet-50. Ours are measured on the
# lesion-grouped test split, with balanced accuracy beside accuracy. (SimpleCNN's row comes from notebook 02's
# results on the same data: on Drive in Colab, from any earlier runtime; elsewhere from `runs/`.)

# %%
rows = {}
saved = RUNS / "02_simple_cnn" / "results.json"
simple = json.loads(saved.read_text()) if saved.is_file() else {}
if simple.get("data_id") != data.data_id:
    print(f"SimpleCNN: no results of notebook 02 on this data in {RUNS}; run it to fill its row")
elif simple.get("smoke", True) and not SMOKE:  # a smoke run's numbers must not sit beside a full run's
    print(f"SimpleCNN: {saved} comes from a SMOKE run (a few batches): not compared; run notebook 02 in full mode")
else:
    rows["SimpleCNN (notebook 02)" + (" SMOKE" if simple.get("smoke") else "")] = [
        100 * simple["test"]["accuracy"], 100 * simple["test"]["balanced_accuracy"], "65.8 %"]
rows["ResNet-50, feature extraction"] = [100 * frozen_test["accuracy"], 100 * frozen_test["balanced_accuracy"], "-"]
rows["ResNet-50, fine-tuned"] = [100 * test["accuracy"], 100 * test["balanced_accuracy"], "83.22 %"]
table = pd.DataFrame.from_dict(rows, orient="index", columns=["accuracy %", "balanced accuracy %", "report"])
print(("SYNTHETIC data, " if SYNTHETIC else "") + ("SMOKE run, " if SMOKE else "") + "test split grouped by lesion; "
      "report: accuracy on a random split by image")
table.round(1)

# %% [markdown]
# ## Save the results
# Beside the checkpoint, for later notebooks (in Colab: on Drive, so a fresh runtime finds them).

# %%
results = {"model": "ResNet-50 fine-tuned", "data": str(DATA_DIR), "data_id": data.data_id, "synthetic": SYNTHETIC,
           "smoke": SMOKE, "pretrained": PRETRAINED, "history": history,
           "test": summarize(test["confusion"], classes=CLASSES)}
(FINETUNED_DIR / "results.json").write_text(json.dumps(results, indent=2))
print(f"saved to {FINETUNED_DIR}")

# %% [markdown]
# How to read it:
# - **Balanced accuracy** is the figure to compare: accuracy rewards getting NV right, and half the test set is NV.
# - The report's figures come from a **random split by image**. On ISIC 2019 about 60 % of such test images have a
#   photograph of the same lesion in the training set (notebook 00), and a network can score on those by
#   recognising the lesion rather than diagnosing it. So the report's accuracies are probably optimistic; ours,
#   measured on lesions never seen in training, are the fairer estimate. They still do not say how the network
#   would do on a new patient: ISIC 2019 has no patient id, so another lesion of a test patient may be in the
#   training set, and the test images come from the same archives, cameras and clinics as the training ones
#   (notebook 05 measures some of what that hides).
# - On the synthetic set, or after a smoke run, the numbers describe that set or that run and nothing else.
#
# ## What to try next
# Items 1 to 6 train runs that differ from the ones above, so **give them new folders first**, in the Parameters
# cell: for example `FROZEN_DIR = RUNS / "03_frozen_try1"` or `FINETUNED_DIR = RUNS / "03_resnet50_try3"`. With the
# old folders, a rerun in Colab would resume the finished run instead of training the new one (or stop because its
# settings differ), and a new fine-tuned model would overwrite `03_resnet50/model.pt`, which notebooks 04 and 05 load.
# 1. **Feature extraction for longer** (a new `FROZEN_DIR`). Set `FROZEN_EPOCHS = 25`. Does the frozen backbone
#    catch up with fine-tuning? How much faster is each epoch?
# 2. **Unfreeze gradually** (a new `FROZEN_DIR`). Freeze everything but `layer4` and `fc`
#    (`frozen.layer4.parameters()`): a middle way.
# 3. **Newer weights** (new `FROZEN_DIR` and `FINETUNED_DIR`). `weights="IMAGENET1K_V2"` in the two
#    `skinlib_resnet50(...)` calls that build `frozen` and `finetuned` loads weights trained with a longer recipe
#    (80.9 % on ImageNet against 76.1 %). Do better ImageNet weights give better lesion features?
# 4. **A higher rate for the head** (a new `FINETUNED_DIR`). Fine-tune with your parameter groups:
#    `train_with_recipe(finetuned, config, checkpoint=..., head_factor=10)`. Does the head's higher rate help
#    balanced accuracy, or just make the first epochs noisier?
# 5. **Pretraining, measured** (a new `FINETUNED_DIR`). SimpleCNN against ResNet-50 compares two architectures
#    *and* pretraining at once. Fine-tune `skinlib_resnet50(num_classes=len(CLASSES), pretrained=False)` (the same
#    architecture from random weights) with the same recipe: how much of ResNet-50's lead is ImageNet's?
# 6. **The leak, measured** (a new `FINETUNED_DIR`). Train the fine-tuned model on `random_split(frame, seed=0)`
#    from `skinlib.splits` instead (real data, full run). How much higher is its test accuracy than on the
#    lesion-grouped split?
# 7. **From the command line.** In a Colab code cell,
#    `!python -m skinlib train --data "{DATA_DIR}" --cache "{data.cache_dir}" --model resnet50 --out "{RUNS}/cli"`
#    runs this whole recipe on the same prepared images and writes metrics, curves, a checkpoint and `model.pt` to
#    a folder on Drive (`--resume` continues it after a disconnect). Colab fills in the `{...}` from the notebook's
#    variables. Elsewhere, in a terminal, give the folders themselves (without `--cache` on the synthetic set).
#
# Next: notebook 04 looks inside this model: what it gets wrong, where it looks, and how to do better on the rare
# classes.

# %% [markdown]
# ## Appendix: more than one GPU
# Colab gives one GPU, and this notebook uses it fully. On a machine with several (a university cluster, a cloud
# server), PyTorch's launcher `torchrun` runs the same recipe from a terminal with one process per GPU: each trains
# a copy of the network on its share of every epoch and the gradients are averaged in every step
# (`DistributedDataParallel`). It is worth it when one GPU takes hours: reference models, longer schedules, many
# runs to compare. For the 25 epochs of this notebook one GPU is enough. The kit's README, section "Scaling" (the
# link below), has the details and the command for several machines.

# %%
gpus = torch.cuda.device_count()
cache_option = "" if data.cache_dir is None else f"--cache {data.cache_dir} "
print(f"this runtime has {gpus} GPU(s); with 4, from a terminal:\n"
      f"  torchrun --standalone --nproc_per_node=4 -m skinlib train --data {DATA_DIR} {cache_option}"
      f"--model resnet50 --epochs 25 --out runs/resnet50-4gpu\n"
      f"(with that machine's own folders for the data and its prepared cache); details: {REPO_URL}#scaling")
