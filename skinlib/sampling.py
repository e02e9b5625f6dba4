"""A seed for every training image, drawn with the data order, so augmentations can be replayed.

DataLoader workers draw random crops and flips from generators seeded once, when the workers
start. With persistent workers (skinlib's default) a run resumed at epoch 3 starts new
workers, so it would see other augmentations than the run that never stopped, and the
augmentations would also change with the number of workers. Instead, the training sampler
yields, with every image index, a seed for that image's random draws, both from one generator
that `engine.fit` reseeds from (run seed, epoch) before every epoch; the image's crop, flip
and rotation are drawn from that seed (`item_random_state`). A run then sees the same
augmented images whether it was resumed or not, and whatever the number of workers.

`SeededItems` puts that seed around any Dataset: the datasets themselves take plain indices
and know nothing of it (`loaders.make_loaders` wraps the training set).

Here too: `seed_everything` for the global generators, and the per-epoch seeding of a
loader's data order (`epoch_seed`, `make_generator`, `set_loader_epoch`) that `fit` uses.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

SEED_LIMIT = 2**62  # below torch.manual_seed's int64 limit


class ShuffleWithSeeds(Sampler[tuple[int, int]]):
    """Yields `(index, seed)` for the `n` indices in a random order, order and seeds from `generator`."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, SEED_LIMIT, (self.n,), generator=self.generator).tolist()
        return iter(zip(order, seeds))


class SeededItems(Dataset):
    """`dataset`, read with the `(index, seed)` pairs of ShuffleWithSeeds: the one seam.

    `SeededItems(dataset)[(index, seed)]` is `dataset[index]` drawn with torch's generator
    started from `seed`, so any Dataset that returns (image, label), a student's own
    included, gets augmentations that a resumed run replays, without knowing about seeds.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with item_random_state(seed):
            return self.dataset[index]


@contextlib.contextmanager
def item_random_state(seed: int | None):
    """Within the block, torch's global generator starts from `seed`; afterwards it is as before.

    `seed=None` leaves the generator alone. skinlib's augmentations (torchvision transforms and
    `augment.TrainAugment`) draw only from torch's generator, so that is the only one set.
    """
    if seed is None:
        yield
        return
    # The CPU generator only: torch.random.fork_rng / torch.manual_seed also visit every
    # accelerator backend, many times the cost of this, once per image.
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's (CPU and every GPU) random-number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of the data order of `epoch` (1-based) in a run seeded with `seed`."""
    # SeedSequence mixes the two numbers so neighbouring (seed, epoch) pairs are unrelated.
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1  # 63 bits: torch.Generator.manual_seed takes a signed int64


def make_generator(seed: int, epoch: int = 1) -> torch.Generator:
    """A CPU generator for `DataLoader(generator=...)`, seeded for `epoch`.

    Pass it to the training DataLoader; `fit` (or `set_loader_epoch`) reseeds it every epoch.
    """
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


def set_loader_epoch(loader: Iterable, seed: int, epoch: int) -> bool:
    """Reseed `loader`'s shuffling for `epoch`; return False if it has nothing to reseed.

    Reseeds the DataLoader's and its samplers' generators (RandomSampler draws from the
    DataLoader's, ShuffleWithSeeds from its own) and calls `sampler.set_epoch` when the sampler
    has one (DistributedSampler and friends).
    """
    samplers = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)]
    generators = {id(g): g for g in [getattr(loader, "generator", None)]
                  + [getattr(s, "generator", None) for s in samplers]
                  if isinstance(g, torch.Generator)}
    for generator in generators.values():
        generator.manual_seed(epoch_seed(seed, epoch))
    with_set_epoch = [s for s in samplers if hasattr(s, "set_epoch")]
    for sampler in with_set_epoch:
        sampler.set_epoch(epoch)
    return bool(generators or with_set_epoch)
