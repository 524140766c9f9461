"""Where training batches come from: arrays in memory, or WebDataset shards streamed from disk.

`train_classifier` draws its batches from a *source*:

- `InMemorySource`: uint8 arrays held on the device, a seeded permutation per epoch (the loop
  as it always was, bit for bit). For sets that fit in memory.
- `ShardSource`: the shards themselves, streamed through a torch `DataLoader` with worker
  processes: each worker reads its share of the shards as a WebDataset stream (tar members
  grouped into samples by `webdataset`), keeps the samples a per-shard keep mask allows (a
  filtered set), shuffles them in a bounded buffer, and decodes them late. Memory is the shuffle
  buffer and a few batches, whatever the size of the set.

Sharing the work: with `world_size` processes (DDP ranks) × `workers` loader workers there are
`world_size × workers` streams. Each epoch, the shards are put in a seeded order and dealt to the
streams, each to the stream with the fewest samples so far, so each rank reads its own share.
When that deal would leave the streams more than 10% apart (fewer shards than streams, or
shards of very different sizes), every stream instead reads every shard and takes every
`streams`-th sample. The order of the batches is deterministic for a seed and a given
(`world_size`, `workers`, `shuffle_buffer`): the DataLoader returns its workers' batches in turn.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synthfactory.ops.seeds import derive_seed
from synthfactory.ops.storage.shards import decode_png
from synthfactory.ops.storage.tarstream import iter_members
from synthfactory.ops.tensors import to_model_space
from synthfactory.ops.training.predict import predict_proba
from synthfactory.ops.training.shardrefs import ShardRef, deal


class TrainingSource(Protocol):
    """What `train_classifier` needs from its data."""

    n_samples: int  # over all ranks
    resolution: int
    channels: int
    soft: bool
    n_targets: int | None
    rank: int
    world_size: int

    def batches(self, batch_size: int, generator: torch.Generator,
                device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches of this rank's (model-space images, targets) on `device`."""
        ...

    def accuracy(self, model: nn.Module, device: torch.device) -> tuple[float, int]:
        """Accuracy of `model` on (this rank's part of) the set, and on how many samples."""
        ...


# The training accuracy of a streamed set is measured on at most this many samples.
ACCURACY_SAMPLES = 10_000


class InMemorySource:
    """Images and targets in memory: a seeded permutation per epoch, the last partial batch of
    an epoch dropped (the training loop as it always was)."""

    rank = 0
    world_size = 1

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        """uint8 N×H×W×C images; targets are labels (N,) or soft labels (N×K)."""
        if len(images) == 0:
            raise ValueError("cannot train a classifier on an empty set")
        self.images, self.targets = images, targets
        self.n_samples = len(images)
        self.resolution, self.channels = images.shape[1], images.shape[3]
        self.soft = targets.ndim == 2
        self.n_targets = targets.shape[1] if self.soft else None

    def batches(self, batch_size: int, generator: torch.Generator,
                device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches of (model-space images, targets) on `device`."""
        data = to_model_space(self.images).to(device)
        target = (torch.from_numpy(self.targets).float() if self.soft
                  else torch.from_numpy(self.targets).long()).to(device)
        order = torch.randperm(self.n_samples, generator=generator)
        position = 0
        while True:
            if position + batch_size > self.n_samples:  # a new epoch: a new seeded permutation
                order, position = torch.randperm(self.n_samples, generator=generator), 0
            batch = order[position:position + batch_size].to(device)
            position += batch_size
            yield data[batch], target[batch]

    def accuracy(self, model: nn.Module, device: torch.device) -> tuple[float, int]:
        """Accuracy on the whole set (hard labels, or the argmax of soft ones), and its size."""
        hard = self.targets.argmax(1) if self.soft else self.targets
        predicted = predict_proba(model, self.images, device=device).argmax(1)
        return float(np.mean(predicted == hard)), self.n_samples


class ShardStream(torch.utils.data.IterableDataset):
    """Endless epochs of (uint8 H×W×C image, target) arrays from one rank's share of the
    shards."""

    def __init__(self, shards: list[ShardRef], *, seed: int, rank: int, world_size: int,
                 workers: int, shuffle_buffer: int, soft: bool, epochs: int | None = None) -> None:
        super().__init__()
        self.shards, self.seed, self.rank, self.world_size = shards, seed, rank, world_size
        self.workers, self.shuffle_buffer, self.soft = workers, shuffle_buffer, soft
        self.epochs = epochs  # None: endless

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        stream = self.rank * self.workers + worker
        for epoch in itertools.count() if self.epochs is None else range(self.epochs):
            reads = deal(self.shards, self.world_size * self.workers, self.seed, epoch)[stream]
            rng = random.Random(derive_seed(self.seed, "shuffle", epoch, stream))
            samples = self._samples(reads)
            if self.shuffle_buffer > 1:
                samples = wds.shuffle(bufsize=self.shuffle_buffer, initial=self.shuffle_buffer,
                                      rng=rng)(samples)
            for sample in samples:
                yield self._decode(sample)

    def _samples(self, reads: list[tuple[int, int, int]]) -> Iterator[dict[str, Any]]:
        """The raw samples of this stream's reads, in order: tar members grouped into samples
        by WebDataset's `group_by_keys` (`<key>.png`, `<key>.cls`, … → one dict per key)."""
        import webdataset as wds

        for index, stride, offset in reads:
            shard = self.shards[index]
            url = str(shard.path)
            members = ({"fname": name, "data": data, "__url__": url}
                       for name, data in iter_members(shard.path))
            for position, sample in enumerate(wds.tariterators.group_by_keys(members)):
                if position % stride == offset and (shard.keep is None or shard.keep[position]):
                    yield sample

    def _decode(self, sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        image = decode_png(sample["png"])
        image = image if image.ndim == 3 else image[:, :, None]
        if self.soft:
            import json

            target = np.asarray(json.loads(sample["json"])["soft_label"], dtype=np.float32)
        else:
            target = np.int64(int(sample["cls"]))
        return image, target


def collate(samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch as two stacked numpy arrays.

    Numpy, not tensors: a worker's tensors cross to the main process through one shared-memory
    segment each (created, mapped and unmapped per batch: 1.7 ms of the training process's CPU
    per batch of 128 8×8 images, measured), numpy arrays as pickled bytes (0.35 ms). The training
    process's CPU is what streaming competes for.
    """
    images = np.stack([image for image, _ in samples])
    targets = np.stack([target for _, target in samples])
    return images, targets


class ShardSource:
    """A set read from its shards as it trains (see the module doc); flat in memory."""

    def __init__(self, shards: list[ShardRef], *, image_shape: tuple[int, int, int],
                 soft: bool = False, n_targets: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1, workers: int = 2, shuffle_buffer: int = 5000) -> None:
        """`image_shape` is (H, W, C) of the stored images; `soft` reads `soft_label` from each
        sample's JSON (`n_targets` columns) instead of the `.cls` label."""
        if not shards or sum(s.used for s in shards) == 0:
            raise ValueError("cannot train a classifier on an empty set (no shard, or every "
                             "sample filtered out)")
        self.shards, self.seed, self.rank, self.world_size = shards, seed, rank, world_size
        self.workers, self.shuffle_buffer = workers, shuffle_buffer
        self.n_samples = sum(s.used for s in shards)
        self.resolution, self.channels = image_shape[0], image_shape[2]
        self.soft, self.n_targets = soft, n_targets

    def with_seed(self, seed: int) -> ShardSource:
        """The same shards and settings, streamed in another seeded order."""
        return ShardSource(self.shards, image_shape=(self.resolution, self.resolution,
                                                     self.channels),
                           soft=self.soft, n_targets=self.n_targets, seed=seed, rank=self.rank,
                           world_size=self.world_size, workers=self.workers,
                           shuffle_buffer=self.shuffle_buffer)

    def stream(self) -> ShardStream:
        """This rank's endless stream of samples."""
        return ShardStream(self.shards, seed=self.seed, rank=self.rank, world_size=self.world_size,
                           workers=max(1, self.workers), shuffle_buffer=self.shuffle_buffer,
                           soft=self.soft)

    def batches(self, batch_size: int, generator: torch.Generator,
                device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches of (model-space images, targets) on `device` from this rank's share.

        `generator` is not used: the stream's order comes from the seed (each worker process
        has its own seeded shuffle).
        """
        del generator
        loader = torch.utils.data.DataLoader(
            self.stream(), batch_size=batch_size, num_workers=self.workers, collate_fn=collate,
            prefetch_factor=4 if self.workers else None,
            persistent_workers=False)
        iterator = iter(loader)
        pin = device.type == "cuda"
        try:
            for images, targets in iterator:
                inputs, labels = to_model_space(images), torch.from_numpy(targets)
                if pin:  # page-locked host memory: the copy to the GPU overlaps compute
                    inputs, labels = inputs.pin_memory(), labels.pin_memory()
                yield (inputs.to(device, non_blocking=True),
                       labels.to(device, non_blocking=True))
        finally:
            del iterator  # shuts the worker processes down

    def accuracy(self, model: nn.Module, device: torch.device) -> tuple[float, int]:
        """Accuracy on this rank's share (without shuffling), over at most ACCURACY_SAMPLES."""
        stream = ShardStream(self.shards, seed=self.seed, rank=self.rank,
                             world_size=self.world_size, workers=1, shuffle_buffer=0,
                             soft=self.soft, epochs=1)
        correct = seen = 0
        model.eval()
        with torch.no_grad():
            samples = itertools.islice(iter(stream), ACCURACY_SAMPLES)
            while batch := list(itertools.islice(samples, 512)):
                images, targets = collate(batch)
                hard = torch.from_numpy(targets.argmax(1) if self.soft else targets)
                logits = model(to_model_space(images).to(device))
                correct += int((F.softmax(logits, 1).argmax(1).cpu() == hard).sum())
                seen += len(batch)
        return correct / seen, seen


