# %% [markdown]
# # 01 — A small CNN, layer by layer
#
# {{BADGE}}
#
# *Study time: about 1 hour (three exercises; nothing is trained here).*
#
# The first network of the course is the one the original student report trained: two convolution blocks
# and three fully connected layers, the textbook "LeNet-like" CNN scaled up to 224x224 colour images.
# We build it here, one layer at a time, and follow a batch of images through it.
#
# **You will learn to**
# - write a `nn.Module`: the layers in `__init__`, the order they run in `forward`;
# - compute a convolutional network's tensor shapes by hand, and check them;
# - count parameters and see which layers hold them;
# - run a forward pass on a batch of images and turn the 8 outputs into class probabilities.
#
# **This is a lab.** Cells marked *Exercise* hold a `# TODO` where your code goes; running one only defines things,
# so it never stops the notebook. The *check* cell after each one runs your code and tells you in one sentence
# whether it is right, what to look at if it is not, or that it is "not done yet". Until an exercise passes, the
# cells below it use skinlib's own version, so you can run the whole notebook at any time, finished or not
# (Colab: Runtime > Run all). (The solutions are in the `solutions/` folder of the kit.)

# %% [markdown]
# ## Set-up
# In Colab, first **File > Save a copy in Drive** and work in that copy (a notebook opened from its badge is not
# saved). The three cells below install `skinlib`, the course's helper package (on your own machine: nothing to
# do), print the versions and the device, and get the data as notebook 00 explains: in Colab the course bundle
# from your Drive, elsewhere the folder in `SKINLIB_DATA`, else the embedded **SYNTHETIC** dataset (made-up
# images, fine for following the code, meaningless as medicine). The notebook runs in under a minute on a CPU
# (12 s measured on a 2-core CPU in smoke mode).

# %% [setup]

# %%
import os
import platform

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import skinlib
from skinlib import models
from skinlib.checks import check_fc1_inputs, check_parameter_formulas, check_simple_cnn, compare_guess, use_yours_or
from skinlib.course import get_data
from skinlib.data import CLASSES, ISICDataset, eval_transform, load_index
from skinlib.device import select_device
from skinlib.models import count_parameters

print(f"Python {platform.python_version()}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, skinlib {skinlib.__version__}")
device = select_device()

# %%
MIRROR = None  # an instructor's mirror address, else the official one (see notebook 00)
data = get_data(mirror=os.environ.get("SKINLIB_MIRROR") or MIRROR)  # in Colab: restored from Drive
DATA_DIR = data.data_dir  # get_data printed it, marked SYNTHETIC where it is

# %% [markdown]
# ## The network
#
# `SimpleCNN` is the report's network. Read `__init__` as a list of the *layers that have weights*, and `forward`
# as the *order they run in*:
#
# | step | layer | what it does |
# | --- | --- | --- |
# | 1 | `conv1` 3 -> 16 channels, 5x5 | slides 16 learned 5x5x3 filters over the image: edges, colour blobs |
# | 2 | ReLU, max-pool 2 | keeps positive responses, halves height and width |
# | 3 | `conv2` 16 -> 32 channels, 5x5 | combines the 16 maps into 32 richer ones |
# | 4 | ReLU, max-pool 2 | halves again |
# | 5 | flatten | 32 maps of side *m* become one vector of 32 x *m* x *m* numbers |
# | 6 | `fc1` 32 x *m* x *m* -> 1200, ReLU | every number connected to every one of 1200 units |
# | 7 | `fc2` 1200 -> 840, ReLU | |
# | 8 | `fc3` 840 -> 8 | one score (a *logit*) per class |
#
# The last layer has no softmax: `nn.CrossEntropyLoss` (notebook 02) applies it inside, which is more accurate
# numerically. The pooling layer has no weights, so one `self.pool` serves twice.
#
# ### How big is *m*? The convolution output size
# `fc1` must be told how many numbers it receives, so the shapes have to be worked out before the network runs.
# A convolution with kernel size $k$, padding $p$ and stride $s$ turns a side of $n$ pixels into
#
# $$n_\text{out} = \left\lfloor \frac{n + 2p - k}{s} \right\rfloor + 1 ,$$
#
# so a 5x5 convolution with no padding and stride 1 gives $n - 4$; a 2x2 max-pool with stride 2 gives
# $\lfloor n / 2 \rfloor$.
#
# **Exercise 1.** Work out the side after conv1, pool, conv2, pool, starting from 224, and write the number of
# values that reach `fc1` (channels x side x side) as an expression, e.g. `16 * 100 * 100`.

# %%
FC1_INPUTS = None
# TODO: FC1_INPUTS = the number of values that reach fc1, as an expression (channels * side * side)
### BEGIN SOLUTION
FC1_INPUTS = 32 * 53 * 53  # 224 -> conv 220 -> pool 110 -> conv 106 -> pool 53
### END SOLUTION

# %%
fc1_passed = check_fc1_inputs(FC1_INPUTS)

# %% [markdown]
# **Exercise 2.** Write SimpleCNN: the layers of the table in `__init__` (use the names `conv1`, `pool`, `conv2`,
# `fc1`, `fc2`, `fc3`, and `num_classes` for the last layer's outputs), then `forward`. `nn.Conv2d`,
# `nn.MaxPool2d`, `nn.Linear`, `F.relu` and `torch.flatten(x, 1)` are all you need.

# %%
class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int = 8):
        super().__init__()
        # TODO: conv1, pool, conv2, fc1, fc2, fc3 as in the table (fc1 takes FC1_INPUTS values)
        ### BEGIN SOLUTION
        self.conv1 = nn.Conv2d(3, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5)
        self.fc1 = nn.Linear(FC1_INPUTS, 1200)
        self.fc2 = nn.Linear(1200, 840)
        self.fc3 = nn.Linear(840, num_classes)
        ### END SOLUTION

    def forward(self, x):  # x: (batch, 3, 224, 224)
        # TODO: conv1, ReLU, pool, conv2, ReLU, pool, flatten, fc1, ReLU, fc2, ReLU, fc3 (no softmax)
        ### BEGIN SOLUTION
        x = self.pool(F.relu(self.conv1(x)))  # (batch, 16, 110, 110)
        x = self.pool(F.relu(self.conv2(x)))  # (batch, 32, 53, 53)
        x = torch.flatten(x, 1)  # (batch, 89888)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)  # (batch, 8): one logit per class
        ### END SOLUTION

# %% [markdown]
# Check it: the check builds your network, compares its output shape and parameter count with the report's, then
# gives it skinlib's weights and compares what each layer receives, so it can tell which step of `forward` is off.

# %%
passed = check_simple_cnn(SimpleCNN)
SimpleCNN = use_yours_or(models.SimpleCNN, SimpleCNN, passed, "SimpleCNN")
torch.manual_seed(0)  # the same random initial weights on every run
model = SimpleCNN(num_classes=len(CLASSES))
if passed:
    print(model)
else:  # skinlib's layers would give Exercises 1 and 2 away
    print("(your layers are printed here once your SimpleCNN passes its check)")

# %% [markdown]
# The cell below does the side arithmetic, then checks it by sending a blank image through the layers (once
# Exercise 1 passes: before, it would print the answer).

# %% tags=["nbval-check-output"]
if fc1_passed:
    side = 224
    for name, rule in [("conv1 5x5", lambda s: s - 5 + 1), ("max-pool 2", lambda s: s // 2),
                       ("conv2 5x5", lambda s: s - 5 + 1), ("max-pool 2", lambda s: s // 2)]:
        print(f"{name:11} {side:3} -> {rule(side):3}")
        side = rule(side)
    print(f"flatten: 32 channels x {side} x {side} = {32 * side * side:,} inputs to fc1")
    pool = getattr(model, "pool", nn.MaxPool2d(2))  # the same layer where forward pools with F.max_pool2d
    with torch.no_grad():
        x = torch.zeros(1, 3, 224, 224)
        for name, layer in [("conv1", model.conv1), ("pool", pool), ("conv2", model.conv2), ("pool", pool)]:
            x = layer(x)
            print(f"after {name:5}: {tuple(x.shape)}")
else:
    print("(the side arithmetic is shown once Exercise 1 passes its check)")

# %% [markdown]
# *Try it:* change `kernel_size=5` to 3 in both convolutions and redo the arithmetic. Which line of `__init__`
# must change too? (This fixed size is also why SimpleCNN accepts only 224x224 images.)
#
# ## Counting parameters
# **Predict before you run.** How many parameters (weights and biases) does SimpleCNN have in all, and what share
# of them is in `fc1`? Write your guess in the next cell as a number (e.g. `2_500_000`), before you go on.

# %%
MY_GUESS = None  # your guess for SimpleCNN's number of parameters

# %% [markdown]
# A layer's parameters follow from its shape. A convolution holds $c_\text{out}$ filters; each filter spans
# all $c_\text{in}$ input channels with a $k \times k$ window of weights, and adds one bias to its output map. A
# linear layer connects each of its $n_\text{in}$ inputs to each of its $n_\text{out}$ outputs with one weight,
# and adds one bias per output.
#
# **Exercise 3.** Write both counts as functions of the layer's sizes. The check compares them with what PyTorch
# counts, on SimpleCNN's layers and on odd sizes; then the table below puts your formulas beside PyTorch's count.

# %%
def conv_parameters(c_in, c_out, k):
    # TODO: return the number of weights and biases of nn.Conv2d(c_in, c_out, kernel_size=k)
    ### BEGIN SOLUTION
    return c_out * (c_in * k * k + 1)
    ### END SOLUTION


def linear_parameters(n_in, n_out):
    # TODO: return the number of weights and biases of nn.Linear(n_in, n_out)
    ### BEGIN SOLUTION
    return n_out * (n_in + 1)
    ### END SOLUTION

# %%
formulas_passed = check_parameter_formulas(conv_parameters, linear_parameters)

# %% tags=["nbval-check-output"]
total = count_parameters(model)
print(f"{'layer':6} {'PyTorch counts':>14}  {'share':>8}  your formula")
for name, layer in model.named_children():
    n = sum(p.numel() for p in layer.parameters())
    if not formulas_passed or not n:
        yours = ""
    elif isinstance(layer, nn.Conv2d):
        yours = f"{conv_parameters(layer.in_channels, layer.out_channels, layer.kernel_size[0]):,}"
    else:
        yours = f"{linear_parameters(layer.in_features, layer.out_features):,}"
    print(f"{name:6} {n:>14,}  {100 * n / total:7.3f} %  {yours}")
print(f"total  {total:>14,}")

# %%
guessed = compare_guess(MY_GUESS, total, "SimpleCNN's number of parameters", "2_500_000")

# %% [markdown]
# **fc1 holds 99 % of the 108.9 million parameters**, while the two convolutions that actually look at the image
# hold 14,048. That is the weak spot of this design: fc1 ties every pixel position of the last feature maps to every
# unit, so it is huge, slow to train (notebook 02) and quick to memorise the training images. ResNet-50 (notebook
# 03) averages its last feature maps instead ("global average pooling") and has 23.5 million parameters: 22 % of
# SimpleCNN's, spread over 50 layers.
# 108.9 M float32 numbers take 436 MB; training with Adam keeps four such copies (weights, gradients and Adam's two
# running averages), about 1.7 GB.
#
# ## A forward pass on a batch of images
# A batch of 4 images from the data folder (the SYNTHETIC set unless `SKINLIB_DATA` names the real one), resized
# and normalised the way every notebook does (`eval_transform`: resize to 256, centre crop 224, subtract the
# ImageNet mean, divide by its standard deviation).

# %%
frame = load_index(DATA_DIR)
dataset = ISICDataset(frame, transform=eval_transform())
images = torch.stack([dataset[i][0] for i in range(4)])
labels = [dataset[i][1] for i in range(4)]
print(f"labels of these 4 images: {[CLASSES[label] for label in labels]}")

# %% tags=["nbval-check-output"]
print(f"images: {tuple(images.shape)}, {images.dtype}")
model.eval()  # no dropout or batch-norm here, but it is the habit to have before inference
with torch.no_grad():
    logits = model(images)
probabilities = logits.softmax(dim=1)
print(f"logits: {tuple(logits.shape)}")
print(f"each row of probabilities sums to 1: {torch.allclose(probabilities.sum(dim=1), torch.ones(4))}")

# %%
print(f"{'true':5} {'predicted':9} {'p':>5}   " + " ".join(f"{name:>4}" for name in CLASSES))
for label, row in zip(labels, probabilities):
    guess = row.argmax().item()
    print(f"{CLASSES[label]:5} {CLASSES[guess]:9} {row[guess]:5.3f}   " + " ".join(f"{p:4.2f}" for p in row.tolist()))

# %% [markdown]
# The network is untrained, so its probabilities are all close to 1/8 = 0.125 and the "predictions" are noise.
# Notebook 02 trains it.
#
# ## The same network in skinlib
# Notebooks 02 and 03 import this network as `skinlib.models.SimpleCNN` instead of copying your cell. Is it
# really the same network? Same parameter names and shapes, and, once it holds the same weights, the same outputs
# (until your SimpleCNN passes its check, `model` is skinlib's own, so this compares it with itself):

# %% tags=["nbval-check-output"]
from skinlib.models import SimpleCNN as LibrarySimpleCNN

library_model = LibrarySimpleCNN(num_classes=len(CLASSES)).eval()
ours = {name: tuple(p.shape) for name, p in model.state_dict().items()}
theirs = {name: tuple(p.shape) for name, p in library_model.state_dict().items()}
print(f"same parameter names and shapes: {ours == theirs}")
library_model.load_state_dict(model.state_dict())
with torch.no_grad():
    print(f"same outputs on the batch: {torch.allclose(library_model(images), logits)}")

# %% [markdown]
# ## What to try next
# 1. **A third block.** Add `conv3 = nn.Conv2d(32, 64, 5)` and a third pool in `forward`. Work out the new flatten
#    size by hand, fix `fc1`, and check with the blank-image cell. How many parameters does fc1 have now?
# 2. **Global average pooling.** Replace `torch.flatten(x, 1)` by `x.mean(dim=(2, 3))` and `fc1` by
#    `nn.Linear(32, 1200)`. Count the parameters again. Does the network now accept a 300x300 image?
# 3. **Probabilities.** Apply `softmax` to `logits * 10` and to `logits / 10`. What happens to the spread of the
#    probabilities, and to the predicted class?
#
# Next: **02_training_and_testing** trains this network and asks whether its accuracy means anything.
