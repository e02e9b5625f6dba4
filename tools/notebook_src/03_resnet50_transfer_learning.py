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
# - to compare the models fairly, on a lesion-grouped test set, with balanced accuracy beside accuracy;
# - to keep a long Colab run safe: checkpoints on Google Drive.
#
# **A lab.** The cell marked *Exercise* only defines a function, so running it never stops the notebook; the check
# cell after it runs your function and says whether it is right, what to look at, or that it is "not done yet".
# Until it passes, the cells below use skinlib's own version, so the notebook runs to the end at any time (Colab:
# Runtime > Run all).
#
# Time: under a minute in smoke mode on a CPU (25 s measured on a 2-core CPU; more on a busy one). The full run
# on ISIC 2019 (5 epochs frozen, 25 fine-tuning) should take in the order of 30-60 minutes on Colab's T4: an
# estimate, not a measurement; `fit` prints the seconds and images per second of every epoch, so measure yours.

# %% [markdown]
# ## Set-up
# In Colab, first **File > Save a copy in Drive**, and work in that copy: a notebook opened from its badge is not
# saved, so your answers would be lost with the runtime.

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
from skinlib.checks import check_resnet_head, use_yours_or
from skinlib.config import TrainConfig
from skinlib.course import get_data
from skinlib.data import CLASSES, load_index
from skinlib.device import select_device
from skinlib.engine import LoopOptions, evaluate, fit
from skinlib.export import data_fingerprint, export_model
from skinlib.loaders import make_loaders
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
torch.manual_seed(0)
print(f"{'SMOKE mode: ' + str(MAX_BATCHES) + ' batches per epoch' if SMOKE else 'full mode'}")
if not PRETRAINED:
    print("SKINLIB_PRETRAINED=0: ResNet-50 starts from RANDOM weights, not ImageNet's. "
          "The results below say nothing about transfer learning.")

# %% [markdown]
# ## Data
# The same lesion-grouped split as notebooks 00 and 02 (same seed, same split). On the real data the images are
# read from the prepared cache on local disk that `get_data` made (notebook 02 explains why). `TrainConfig` holds the recipe: its defaults are the report's settings.

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
# SimpleCNN stacked two convolutions; ResNet-50 stacks 49 of them, and three ideas make that depth trainable:
# - **Batch normalisation** (`BatchNorm2d`, after every convolution): each channel is shifted and scaled to mean 0
#   and variance 1 over the batch, then by two learned numbers. The next layer always sees inputs of a similar
#   scale, so training tolerates larger learning rates. In evaluation mode it uses running averages kept during
#   training instead of the batch's own statistics (one reason for `model.eval()`).
# - **Residual blocks**: a block computes $F(x)$ and outputs $\mathrm{ReLU}(x + F(x))$. The "skip connection"
#   $x$ lets the gradient flow straight back through dozens of blocks, and a block that has nothing useful to add
#   can learn $F(x) \approx 0$.
# - **Bottlenecks**: ResNet-50's blocks are 1x1 conv (256 -> 64 channels), 3x3 conv (64 -> 64), 1x1 conv
#   (64 -> 256): the expensive 3x3 convolution works on 4 times fewer channels. When a block changes the size, a
#   1x1 convolution (`downsample`) reshapes $x$ so it can be added.
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
if MY_GUESS is not None:
    print(f"your guess: {MY_GUESS:,}; the count: {count_parameters(model, trainable_only=True):,}")
else:
    print("(write your guess in MY_GUESS above and run this cell again to compare)")

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

# %%
STEPS_PER_EPOCH = min(len(loaders["train"]), MAX_BATCHES or len(loaders["train"]))  # batches per epoch of this run


def train_with_recipe(model, config, checkpoint=None, resume=False):
    model = model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                    total_steps=config.epochs * STEPS_PER_EPOCH)
    return fit(model, loaders, optimizer, device, epochs=config.epochs, scheduler=scheduler,
               checkpoint=CheckpointPlan(checkpoint, resume) if checkpoint else None, config=config)

# %% [markdown]
# The learning rate of every step of the fine-tuning run below, with the same scheduler on a throw-away optimizer
# (a smoke run takes only a few steps, so it shows the full run's instead):

# %%
plot_one_cycle(config, len(loaders["train"].dataset), smoke=SMOKE, synthetic=SYNTHETIC)

# %% [markdown]
# ## Keep a long Colab run safe
# A Colab runtime can disconnect (idle, time limit, lost connection) and its disk goes with it. `fit` writes a
# checkpoint after every epoch: weights, optimizer, schedule, random states and history. Both runs below, feature
# extraction and fine-tuning, put theirs on Google Drive. A lost runtime then costs the epoch in progress plus the
# set-up of a fresh runtime (the data cell restores the images again): reconnect, run the notebook again from the
# top with the same settings, and each run resumes after its last finished epoch (a finished run is loaded, not
# trained again). In Colab the checkpoints go to the course's Drive folder (`data.results_dir`), in a folder named
# after the data, so a checkpoint of other data is never resumed. Only the checkpoints go to Drive; the prepared
# images stay on the runtime's fast local disk. To start a run over, delete its checkpoint.

# %%
RESUME = data.drive_dir is not None  # on Drive: a run of the notebook continues the last one
checkpoints = {"feature extraction": FROZEN_DIR / "checkpoint.pt", "fine-tuning": FINETUNED_DIR / "checkpoint.pt"}
for run, checkpoint in checkpoints.items():
    print(f"{run}: a checkpoint after every epoch in {checkpoint}"
          f"{' (resumed if it exists; delete it to start over)' if RESUME else ''}")

# %% [markdown]
# ## 1. Feature extraction: freeze the backbone
# A fresh ImageNet ResNet-50 through your `replace_head_and_freeze`; only the head learns.

# %%
frozen = replace_head_and_freeze(skinlib_resnet50(num_classes=1000, pretrained=PRETRAINED))

# %% tags=["nbval-check-output"]
print(f"trainable: {count_parameters(frozen, trainable_only=True):,} of {count_parameters(frozen):,} parameters")

# %%
frozen_history = train_with_recipe(frozen, config.replace(epochs=FROZEN_EPOCHS, out=str(FROZEN_DIR)),
                                   checkpoint=checkpoints["feature extraction"], resume=RESUME)
frozen_test = evaluate(frozen, loaders["test"], device, options=LoopOptions(max_batches=MAX_BATCHES))

# %% [markdown]
# One subtlety: in training mode the batch-normalisation layers still update their running averages on our images,
# even with frozen weights. Keeping those fixed too would need the batch-norm layers in eval mode during training;
# `fit` puts the whole model in training mode, so that takes a training loop of your own (notebook 02's, say).
#
# ## 2. Fine-tuning: train everything
# All 23.5 M parameters learn, starting from ImageNet's values: slower, and the network can adapt its features to
# dermoscopy. This is the report's method, and the long run of the course: its checkpoint is the second one above.
# Once trained, the model alone goes to `model.pt` beside it, for notebooks 04 and 05.

# %%
finetuned = skinlib_resnet50(num_classes=len(CLASSES), pretrained=PRETRAINED)
history = train_with_recipe(finetuned, config, checkpoint=checkpoints["fine-tuning"], resume=RESUME)
test = evaluate(finetuned, loaders["test"], device, options=LoopOptions(max_batches=MAX_BATCHES))
model_path = export_model(FINETUNED_DIR / "model.pt", finetuned, "resnet50",
                          data={"fingerprint": data_fingerprint(frame, split)})
print(f"saved for notebooks 04 and 05: {model_path}")

# %% [markdown]
# ## Learning curves
# The report's Figure 3 showed these for its fine-tuning run. Compare with SimpleCNN's in notebook 02: a pretrained
# network usually starts higher and climbs faster. In a full run, watch the gap between training and validation open
# up in the later epochs, and the loss drop as the one-cycle schedule lowers the learning rate at the end.

# %%
RUN_NAME = f"{'SYNTHETIC data' if SYNTHETIC else DATA_DIR.name}{', SMOKE run' if SMOKE else ''}" + \
    ("" if PRETRAINED else ", RANDOM initial weights")
plot_curves(history, title=f"ResNet-50, fine-tuned: {RUN_NAME}")

# %% [markdown]
# And the feature-extraction run (frozen backbone, only the head trained): it usually starts lower and flattens
# sooner, since only 16,392 parameters learn.

# %%
plot_curves(frozen_history, title=f"ResNet-50, frozen backbone: {RUN_NAME}")

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
if saved.is_file() and json.loads(saved.read_text()).get("data_id") == data.data_id:
    simple = json.loads(saved.read_text())["test"]
    rows["SimpleCNN (notebook 02)"] = [100 * simple["accuracy"], 100 * simple["balanced_accuracy"], "65.8 %"]
else:
    print(f"SimpleCNN: no results of notebook 02 on this data in {RUNS}; run it to fill its row")
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
#   measured on lesions never seen in training, are the fairer estimate of how the network would do on a new patient.
# - On the synthetic set, or after a smoke run, the numbers describe that set or that run and nothing else.
#
# ## What to try next
# Items 1 to 4 train runs that differ from the ones above, so **give them new folders first**, in the Parameters
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
# 4. **The leak, measured** (a new `FINETUNED_DIR`). Train the fine-tuned model on `random_split(frame, seed=0)`
#    from `skinlib.splits` instead (real data, full run). How much higher is its test accuracy than on the
#    lesion-grouped split?
# 5. **From the command line.** In a Colab code cell,
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
