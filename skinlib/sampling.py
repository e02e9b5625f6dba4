"""A seed for every training image, drawn with the data order, so augmentations can be replayed.

DataLoader workers draw random crops and flips from generators seeded once, when the workers
start. With persistent workers (skinlib's default) a run resumed at epoch 3 starts new
workers, so it would see other augmentations than the run that never stopped, and the
augmentations would also change with the number of workers. Instead, the training sampler
yields, with every image index, a seed for that image's random draws, both from one generator
that `engine.fit` reseeds from (run seed, epoch) before every epoch; the dataset draws the
image's crop, flip and rotation from that seed (`item_random_state`). A run then sees the same
augmented images whether it was resumed or not, and whatever the number of workers.

Datasets that support it (`data.ISICDataset`, `cache.CachedDataset`) take either a plain index
(a fresh random draw from the global generator, as usual) or the `(index, seed)` pair.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.utils.data import Sampler

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


def split_key(key) -> tuple[int, int | None]:
    """(index, seed) of a dataset key: a plain index (seed None) or the pair ShuffleWithSeeds yields."""
    if isinstance(key, tuple):
        index, seed = key
        return index, seed
    return key, None


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
    # accelerator backend, about 150 us an image on 2 cores, where this costs about 2 us.
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)
