"""Is the input a T1 contrast-enhanced slice or another MRI sequence? A small learned check.

The intensity check (:mod:`scripts.input_check`) compares a slice's histogram with the training
slices'. A FLAIR slice from a scanner whose T1 contrast slices also differ from the training ones
passes it: the histograms of T1 contrast volumes from other scanners differ about as much. What
tells the sequences apart is how the tissues are ordered (T1 contrast: fat and enhancing vessels
brightest, white matter brighter than grey matter; FLAIR: grey matter brighter than white matter,
fat duller) and that is a picture, not a histogram. :class:`SequenceClassifier` is two small CNNs over
the network's own input shrunk to :data:`SEQUENCE_INPUT_SIZE` pixels a side. They are trained
(:func:`train_sequence_classifier`, ``benchmarks/make_sequence_check.py``) on T1 contrast slices
against FLAIR slices; the first also against T1 contrast slices whose tissue intensities were
reordered (:func:`reorder_intensities`: another sequence is, to a first look, the same anatomy with
its tissues in another order), the second under many scanners' looks, so that the check learns the
order rather than one scanner's look.
:class:`OtherSequenced` adds the probability that a slice is another sequence and flags the slice
above ``threshold``; :func:`scripts.input_check.unusual_volume` flags a volume when more than half
of its slices are above it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform
from torch import nn

__all__ = [
    "MEMBER_RECIPES",
    "OTHER_SEQUENCE_THRESHOLD",
    "SEQUENCE_INPUT_SIZE",
    "OtherSequenced",
    "SequenceClassifier",
    "reorder_intensities",
    "sequence_input",
    "train_sequence_classifier",
]

#: The classifier's input: the network's preprocessed slice, averaged down to this many pixels a side.
SEQUENCE_INPUT_SIZE = 64
#: A slice whose probability of another sequence exceeds this is flagged; a volume, when its median does.
#: Chosen on the TCGA-LGG volumes left out of training (patients, then a whole institution): from 0.5 to
#: 0.7 the FLAIR volumes flagged and the T1 contrast volumes passed barely move; 0.6 lies between.
OTHER_SEQUENCE_THRESHOLD = 0.6
#: The knots of the intensity curves of :func:`reorder_intensities` and of the training's monotone jitter.
_KNOTS = np.linspace(0.0, 1.0, 7)


def _member(channels: Sequence[int], dropout: float) -> nn.Sequential:
    """One CNN: 3x3 convolution blocks (batch norm, ReLU, 2x2 max pooling), global average pooling, one unit."""
    layers: list[nn.Module] = []
    previous = 1
    for width in channels:
        layers += [nn.Conv2d(previous, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        previous = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(previous, 1))


class SequenceClassifier(nn.Module):
    """The logit that a (N, 1, S, S) slice is another sequence than T1 contrast-enhanced.

    Small CNNs (about 15,000 weights each, under a millisecond per slice on a CPU), trained apart with
    different augmentation (:data:`MEMBER_RECIPES`); their probabilities are averaged. One alone
    swings with its seed on slices of a scanner it never saw; the average holds steadier.

    Args:
        members: how many CNNs.
        channels: the channels of each CNN's four blocks.
        dropout: before each CNN's output unit, in training.
    """

    def __init__(self, members: int = 2, channels: Sequence[int] = (8, 16, 32, 32), dropout: float = 0.3) -> None:
        super().__init__()
        self.members = nn.ModuleList(_member(channels, dropout) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) slices scaled to [0, 1] -> (N,) logits of the members' mean probability."""
        probability = torch.stack([torch.sigmoid(m(x)[:, 0]) for m in self.members]).mean(dim=0)
        return torch.logit(probability, eps=1e-6)


def sequence_input(images: Any) -> torch.Tensor:
    """The classifier's input: slices ((H, W), (C, H, W) or (N, C, H, W); channels averaged) area-averaged
    to (N, 1, :data:`SEQUENCE_INPUT_SIZE`, :data:`SEQUENCE_INPUT_SIZE`) float32."""
    x = torch.as_tensor(np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images))
    x = torch.nan_to_num(x.float())
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[None]
    x = x.mean(dim=1, keepdim=True)
    return F.adaptive_avg_pool2d(x, SEQUENCE_INPUT_SIZE)


def _curve(rng: np.random.Generator, monotone: bool) -> np.ndarray:
    """Intensity values at :data:`_KNOTS` starting at 0 (air stays dark): increasing, or with a fall of at
    least 0.2 between two knots (two tissues change places), scaled to end at most at 1."""
    if monotone:
        return np.concatenate([[0.0], np.cumsum(rng.dirichlet(np.full(len(_KNOTS) - 1, 3.0)))])
    while True:
        values = np.concatenate([[0.0], rng.uniform(0.05, 1.0, len(_KNOTS) - 1)])
        if np.max(-np.diff(values)) > 0.2:
            return values / values.max()


def reorder_intensities(image: np.ndarray, rng: np.random.Generator, monotone: bool = False) -> np.ndarray:
    """``image`` (scaled to [0, 1]) through a random piecewise-linear intensity curve that keeps air dark.

    With ``monotone`` False the curve falls somewhere: some brighter tissue becomes darker than a
    dimmer one, as in another sequence. With ``monotone`` True it only rises: another scanner's or
    export's windowing of the same sequence.
    """
    return np.interp(image, _KNOTS, _curve(rng, monotone)).astype(np.float32)


def _turn_and_gamma(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flips, a quarter turn and a gamma for the whole batch: axial slices come in any orientation and windowing."""
    if rng.random() < 0.5:
        batch = batch.flip(3)
    if rng.random() < 0.5:
        batch = batch.flip(2)
    batch = torch.rot90(batch, int(rng.integers(4)), (2, 3))
    return batch.clamp(0, 1) ** float(np.exp(rng.normal(0.0, 0.2)))


def _scanner_look(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per slice: any rotation, a mirror, a zoom of up to 28%, a shift; a third blurred (a coarser scan);
    a gamma, a darker top and noise (another scanner's windowing and grain)."""
    n = len(batch)
    angle = torch.from_numpy(rng.uniform(-np.pi, np.pi, n)).float()
    scale = torch.from_numpy(np.exp(rng.uniform(-0.25, 0.25, n))).float()
    mirror = torch.from_numpy(rng.choice([-1.0, 1.0], n)).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) * scale * mirror, -torch.sin(angle) * scale
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) * scale * mirror, torch.cos(angle) * scale
    theta[:, :, 2] = torch.from_numpy(rng.uniform(-0.1, 0.1, (n, 2))).float()
    batch = F.grid_sample(batch, F.affine_grid(theta, list(batch.shape), align_corners=False), align_corners=False)
    blurred = torch.from_numpy(rng.random(n) < 0.3)
    if blurred.any():
        coarse = F.avg_pool2d(batch[blurred], 2)
        batch[blurred] = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)

    def per_slice(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).float().view(n, 1, 1, 1)

    batch = batch.clamp(0, 1) ** per_slice(np.exp(rng.normal(0.0, 0.25, n))) * per_slice(rng.uniform(0.85, 1.0, n))
    return (batch + torch.randn_like(batch) * per_slice(rng.uniform(0.0, 0.03, n))).clamp(0, 1)


#: How each member of :class:`SequenceClassifier` is trained: its epochs, the share of T1 contrast slices
#: made into other-sequence examples by :func:`reorder_intensities` (half of the rest get a monotone
#: curve), and its augmentation. The first learns the tissue order; the second, without reordering,
#: sees each slice under many scanners' looks. On the TCGA-LGG volumes with all Duke (DU) patients left
#: out of training, one CNN alone flagged 2 to 11 of their 41 T1 contrast volumes at 0.6, by its recipe
#: and seed, the average of a pair 3 to 6 (benchmarks/sequence_check_folds.py, the docs).
MEMBER_RECIPES: tuple[dict[str, Any], ...] = (
    {"epochs": 12, "reorder_share": 0.3, "augment": _turn_and_gamma},
    {"epochs": 20, "reorder_share": 0.0, "augment": _scanner_look},
)


def _train_member(
    member: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Mapping[str, Any],
    rng: np.random.Generator,
    batch_size: int,
    learning_rate: float,
    progress: Any,
) -> None:
    """Train one CNN of :class:`SequenceClassifier` in place, as ``recipe`` says (:data:`MEMBER_RECIPES`)."""
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean())).astype(np.float32)
    optimizer = torch.optim.AdamW(member.parameters(), learning_rate, weight_decay=1e-3)
    steps = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=recipe["epochs"] * steps)
    member.train()
    for epoch in range(recipe["epochs"]):
        order, losses = rng.permutation(len(images)), []
        for start in range(0, len(images), batch_size):
            pick = order[start : start + batch_size]
            x, y, w = images[pick].copy(), labels[pick].copy(), weights[pick].copy()
            for j in np.flatnonzero(y == 0):
                if rng.random() < recipe["reorder_share"]:
                    x[j, 0], y[j], w[j] = reorder_intensities(x[j, 0], rng), 1.0, 0.5 * w[j]
                elif recipe["reorder_share"] and rng.random() < 0.5:
                    x[j, 0] = reorder_intensities(x[j, 0], rng, monotone=True)
            logits = member(recipe["augment"](torch.from_numpy(x), rng))[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(y), reduction="none")
            loss = (loss * torch.from_numpy(w)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        if progress is not None:
            progress(epoch, float(np.mean(losses)))
    member.eval()


def train_sequence_classifier(
    t1_contrast: np.ndarray,
    other: np.ndarray,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    progress: Any = None,
    recipes: Sequence[Mapping[str, Any]] = MEMBER_RECIPES,
) -> SequenceClassifier:
    """Train a :class:`SequenceClassifier`, one member per recipe (about 2 minutes on 2 CPU cores for
    3,500 slices with the shipped two). Each batch is balanced by weight between the two classes.

    Args:
        t1_contrast: (N, S, S) T1 contrast slices as :func:`sequence_input` gives them, scaled to [0, 1].
        other: (M, S, S) slices of other sequences (e.g. FLAIR), likewise.
        seed: the seed of the weights, the order and the augmentation.
        epochs: passes over the slices for every member; None: each member's own.
        batch_size: slices per step.
        learning_rate: AdamW's peak rate (one-cycle schedule).
        progress: called with (member, epoch, mean loss) after each epoch; None: silent.
        recipes: one member per recipe (:data:`MEMBER_RECIPES`, the shipped design; the same recipe twice
            gives two members that differ by their random numbers).

    Raises:
        ValueError: either class is empty, the slices are not (N, S, S) arrays of one size, or no recipe.
    """
    if not recipes:
        raise ValueError("training a sequence classifier needs at least one member recipe")
    arrays = [np.asarray(a, dtype=np.float32) for a in (t1_contrast, other)]
    if any(a.ndim != 3 or len(a) == 0 for a in arrays) or arrays[0].shape[1:] != arrays[1].shape[1:]:
        shapes = [a.shape for a in arrays]
        raise ValueError(f"training a sequence classifier needs two non-empty (N, S, S) stacks, got {shapes}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = np.concatenate(arrays)[:, None]
    labels = np.concatenate([np.zeros(len(arrays[0])), np.ones(len(arrays[1]))]).astype(np.float32)
    model = SequenceClassifier(members=len(recipes))
    for index, (member, recipe) in enumerate(zip(model.members, recipes)):
        recipe = {**recipe, "epochs": epochs or recipe["epochs"]}
        report = None if progress is None else (lambda e, loss, i=index: progress(i, e, loss))
        _train_member(member, images, labels, recipe, rng, batch_size, learning_rate, report)
    return model.eval()


class OtherSequenced(MapTransform):
    """Adds ``<key>_other_sequence``, the probability that the slice is another MRI sequence than T1
    contrast-enhanced (:class:`SequenceClassifier`), and sets ``<key>_unusual`` when it exceeds ``threshold``
    (an earlier check's flag is kept: run it after :class:`~scripts.input_check.InputLikenessd`).

    Args:
        keys: the preprocessed image key(s), scaled to [0, 1] as the segmentation network sees them.
        network: a :class:`SequenceClassifier` with its weights (the bundle's ``sequence_network``).
        threshold: the probability above which a slice is flagged.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        network: nn.Module | None = None,
        threshold: float = OTHER_SEQUENCE_THRESHOLD,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if network is None:
            raise ValueError("OtherSequenced needs the sequence classifier (network)")
        self.network = network.eval()
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        device = next(self.network.parameters()).device
        for key in self.key_iterator(d):
            with torch.inference_mode():
                probability = float(torch.sigmoid(self.network(sequence_input(d[key]).to(device)))[0])
            d[f"{key}_other_sequence"] = round(probability, 4)
            d[f"{key}_unusual"] = bool(d.get(f"{key}_unusual", False)) or probability > self.threshold
        return d
