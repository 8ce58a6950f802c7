"""Inter-class separation of SS-Net: prototype memory and weighted cosine loss.

SS-Net (Wu et al., MICCAI 2022, Sec. 2.2 "Inter-class separation", Eq. (4);
built on Alonso et al., ICCV 2021, "Semi-supervised semantic segmentation with
pixel-level contrastive learning from a class-wise memory bank") pulls the
features of each class towards a small set of high-quality prototypes of that
class:

* :class:`PrototypeMemory` - per class at most ``per_class`` (32) projected
  feature vectors of correctly predicted labeled foreground voxels, replaced
  every iteration and ranked by a learned selector.
* :func:`separation_loss` - Eq. (4): for each class c with memory Z_c
  (N_c x D) and features F_c (M_c x D),
  ``L_c = mean_{j,i} (1 - cos(f_j, z_i)) * w_f[j] * w_z[i]``, where
  ``w_f = sigmoid(selector_c(f.detach()))`` rescaled to mean 1 over the M_c
  features and ``w_z`` the memory weights (see ``memory_weighting``);
  ``L = sum_c L_c / C`` over all C classes (skipped classes count as 0).
* :func:`separation_step` - the whole per-iteration separation step of the
  released training scripts (candidates, projection, memory update, labeled
  and unlabeled losses): ``(L_cs^l, L_cs^u)``, weighted in the total loss as
  ``dice + w(t) * (lds + 0.1 * (L_cs^l + L_cs^u))``. Its ``heads`` argument is
  any object with the attributes ``projection_head``, ``prediction_head``,
  ``feature_selectors`` and ``memory_selectors``: SS-Net's V-Net / U-Net, or a
  :class:`SeparationHeads` of your own heads.

Copy-ready: imports only torch and the standard library; no device is
hard-coded; :func:`separation_step` takes (B, C, *spatial) maps with 1
(point sets), 2 or 3 spatial dims. One :func:`separation_step` makes exactly
ONE host-device synchronisation. Under ``torch.autocast`` (e.g. bfloat16) the
memory is stored in float32 and the loss is computed in float32; only the
projection and prediction heads run in the autocast dtype.
"""
from __future__ import annotations

import contextlib
from typing import Any, NamedTuple
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["eval_mode", "PrototypeMemory", "SeparationHeads", "separation_loss", "separation_step", "split_by_class",
           "KEEP_MODES", "MEMORY_WEIGHTINGS"]

KEEP_MODES = ("lowest", "highest")
MEMORY_WEIGHTINGS = ("released", "mean")


def _check_labels(labels: torch.Tensor, name: str) -> torch.Tensor:
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}; use labels.long().")
    return labels.long()


def _outside_error(count: int, num_classes: int) -> ValueError:
    """The error for ``count`` labels outside ``0..num_classes-1``."""
    return ValueError(
        f"split_by_class: {count} labels lie outside 0..{num_classes - 1}; "
        "check the label maps (ignore values such as 255 are not supported) or num_classes."
    )


def _class_order(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Device-side grouping of ``labels`` (N,) by class, without a host synchronisation.

    ``key = labels`` where ``0 <= labels < C``, else ``C``; ``order`` is the STABLE
    argsort of ``key`` (so within a class the rows keep their original order) and
    ``counts[k] = #{i : key_i = k}`` for ``k = 0..C`` (found by ``searchsorted`` on the
    sorted keys; ``torch.bincount`` would read the maximum to the host on CUDA).

    Returns:
        ``(order, counts)``: (N,) int64 and (C + 1,) int64, both on ``labels``' device;
        ``counts[C]`` is the number of out-of-range labels.
    """
    key = torch.where((labels >= 0) & (labels < num_classes), labels, torch.full_like(labels, num_classes))
    return _sorted_counts(key, num_classes + 1)


def _sorted_counts(key: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable argsort of ``key`` (N,) with values in ``0..bins-1`` and the count of each value.

    Returns:
        ``(order, counts)``: (N,) and (bins,) int64 on ``key``'s device; no host synchronisation.
    """
    sorted_key, order = torch.sort(key, stable=True)
    edges = torch.searchsorted(sorted_key, torch.arange(bins + 1, device=key.device, dtype=key.dtype))
    return order, edges.diff()


def split_by_class(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """Split the rows of ``features`` (N, D) by ``labels`` (N,) into ``num_classes`` groups.

    Group c holds the rows with label c in their original order (the same
    tensor as ``features[labels == c]``). Uses one stable sort and ONE host
    synchronisation for all classes (the group sizes decide tensor shapes, so
    they must be known on the host), instead of one per class.
    (:func:`separation_step` does not call it: it reads the sizes of all its
    groupings in a single synchronisation.)

    Raises:
        ValueError: if a label lies outside ``0..num_classes-1``.
    """
    labels = _check_labels(labels, "split_by_class")
    order, counts_device = _class_order(labels, num_classes)
    counts = counts_device.tolist()  # the one host synchronisation (group sizes)
    if counts[num_classes] > 0:
        raise _outside_error(counts[num_classes], num_classes)
    return list(torch.split(features[order], counts[:num_classes]))


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode inside the block; restore every submodule's mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 if it is a reduced-precision float (bfloat16, float16), else unchanged.

    Exact (every bfloat16 / float16 value is a float32 value); returns ``tensor``
    itself for float32 and float64, so float32 code paths are untouched.
    """
    if tensor.is_floating_point() and tensor.element_size() < 4:
        return tensor.float()
    return tensor


def _float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """A block where autocast is off, so the ops in it run in their inputs' dtype.

    It does not cast tensors made outside it: inputs must be cast with ``.float()``
    (a no-op for float32 tensors) to be computed in float32.
    """
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # device type without autocast support
        return contextlib.nullcontext()


class PrototypeMemory:
    """Class-wise prototype memory of SS-Net (no accumulation across iterations).

    ``update(features, labels, selectors)`` replaces, for every class c present
    in ``labels``, the stored vectors of c by the class's vectors: all of them
    if there are at most ``per_class``, else ``per_class`` of them chosen by the
    score ``sigmoid(selectors[c](v))``. A class absent from ``labels`` keeps its
    previous memory. SS-Net passes only the candidates (correctly predicted
    labeled foreground voxels after the projection head), so the background
    memory stays empty.

    Args:
        num_classes: C, the number of classes (background included).
        per_class: K, the most vectors stored per class (32 in SS-Net).
        keep: ``"lowest"`` keeps the K LOWEST scores (released behaviour: an
            ascending sort and the first K, which produced the published
            numbers); ``"highest"`` keeps the K highest (the paper's text, "top-K").

    Attributes:
        memory: list of C entries, each None (never filled) or a detached
            (n_c, D) tensor on the features' device, 1 <= n_c <= K, stored in
            float32 when the features come in bfloat16 / float16 (e.g. from heads
            run under ``torch.autocast``; float64 features are kept in float64).

    Raises:
        ValueError: for ``num_classes < 1``, ``per_class < 1`` or an unknown ``keep``.
    """

    def __init__(self, num_classes: int, per_class: int = 32, keep: str = "lowest") -> None:
        if num_classes < 1:
            raise ValueError(f"PrototypeMemory: num_classes must be >= 1, got {num_classes}.")
        if per_class < 1:
            raise ValueError(f"PrototypeMemory: per_class must be >= 1, got {per_class}.")
        if keep not in KEEP_MODES:
            raise ValueError(f"PrototypeMemory: keep must be one of {KEEP_MODES}, got {keep!r}.")
        self.num_classes = num_classes
        self.per_class = per_class
        self.keep = keep
        self.memory: list[torch.Tensor | None] = [None] * num_classes

    def state_dict(self) -> dict[str, list[torch.Tensor | None]]:
        """``{"memory": [None or the (n_c, D) tensor of class c, moved to the CPU]}``, for a checkpoint."""
        return {"memory": [None if m is None else m.detach().cpu() for m in self.memory]}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        """Restore a :meth:`state_dict`, moving the tensors to ``device`` when given.

        bfloat16 / float16 entries (a checkpoint of a mixed-precision run before the
        memory was kept in float32) are restored in float32 (exactly).

        Raises:
            ValueError: unless ``state["memory"]`` has one entry per class, each None
                or an (n_c, D) tensor with 1 <= n_c <= ``per_class``.
        """
        memory = list(state["memory"])
        if len(memory) != self.num_classes:
            raise ValueError(f"PrototypeMemory.load_state_dict: {len(memory)} entries for "
                             f"{self.num_classes} classes.")
        for c, m in enumerate(memory):
            if m is not None and (not isinstance(m, torch.Tensor) or m.dim() != 2
                                  or not 1 <= m.shape[0] <= self.per_class):
                shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"PrototypeMemory.load_state_dict: class {c} holds {shape}, need None or "
                                 f"(n, D) with 1 <= n <= {self.per_class}.")
        memory = [m if m is None else _at_least_float32(m) for m in memory]
        self.memory = [m if m is None or device is None else m.to(device) for m in memory]

    def update(self, features: torch.Tensor, labels: torch.Tensor, selectors: Sequence[nn.Module]) -> None:
        """Store the vectors of each class present in ``labels``.

        Args:
            features: (N, D) projected candidate vectors (detached internally; stored
                in float32 if they are bfloat16 / float16).
            labels: (N,) integer class of each vector.
            selectors: indexable by class; ``selectors[c]`` maps (n, D) -> (n, 1)
                scores (SS-Net: ``contrastive_class_selector_<c>``). It is called,
                without gradient, in float32 and in its current mode, only for classes
                with more than ``per_class`` vectors (as in the released code; in train
                mode its BatchNorm running statistics are updated by that call).

        One host synchronisation (the class sizes, :func:`split_by_class`).

        Raises:
            ValueError: on mismatched shapes, too few selectors, or out-of-range labels.
        """
        if features.dim() != 2 or labels.shape != features.shape[:1]:
            raise ValueError(
                f"PrototypeMemory.update: features must be (N, D) and labels (N,), got "
                f"{tuple(features.shape)} and {tuple(labels.shape)}."
            )
        self._check_selectors(selectors)
        features = _at_least_float32(features.detach())
        self._store(split_by_class(features, labels, self.num_classes), selectors)

    def _check_selectors(self, selectors: Sequence[nn.Module]) -> None:
        if len(selectors) < self.num_classes:
            raise ValueError(
                f"PrototypeMemory.update: need one selector per class ({self.num_classes}), got {len(selectors)}."
            )

    def _store(self, groups: Sequence[torch.Tensor], selectors: Sequence[nn.Module]) -> None:
        """Store ``groups[c]`` ((n_c, D), detached, the rows of class c in order) for every class c with n_c > 0."""
        for c, features_c in enumerate(groups):
            n = features_c.shape[0]
            if n == 0:
                continue  # released behaviour: an absent class keeps its previous memory
            if n > self.per_class:
                # scored and sorted in float32 even under autocast: in bfloat16 ~10^5 candidates share a
                # few hundred score values, and the sort's tie order would pick the kept vectors
                with torch.no_grad(), torch.autocast(features_c.device.type, enabled=False):
                    scores = torch.sigmoid(selectors[c](features_c.float()))[:, 0]
                    order = torch.sort(scores, dim=0, descending=self.keep == "highest").indices
                    self.memory[c] = features_c[order[: self.per_class]]
            else:
                # clone: the split is a view of all the candidates; keep only this class's rows
                self.memory[c] = features_c.clone()

    def __repr__(self) -> str:
        sizes = [None if m is None else tuple(m.shape) for m in self.memory]
        return (f"PrototypeMemory(num_classes={self.num_classes}, per_class={self.per_class}, "
                f"keep={self.keep!r}, sizes={sizes})")


def _class_term(features_c: torch.Tensor, memory_c: torch.Tensor, selector: nn.Module,
                selector_memory: nn.Module, memory_weighting: str) -> torch.Tensor:
    """Weighted mean cosine distance of one class, Eq. (4); returns a float32 scalar.

    Everything here (normalisation, distances, both selectors, weights, mean) runs
    in float32 with autocast off, whatever the dtype of ``features_c`` (M, D) and
    ``memory_c`` (N, D); gradients flow back to ``features_c`` in its own dtype.
    """
    memory_c = memory_c.detach().to(features_c.device)
    with _float32_region(features_c.device):
        memory_norm = F.normalize(memory_c.float(), dim=1)  # (N, D)
        features_norm = F.normalize(features_c.float(), dim=1)  # (M, D)
        distances = 1 - torch.mm(features_norm, memory_norm.t())  # (M, N), in [0, 2]

        # Feature weights from DETACHED features: the selector learns, the features get no gradient here.
        w_f = torch.sigmoid(selector(features_c.detach().float())).float()  # (M, 1)
        # The memory selector sees the L2-normalised memory, as in the released code.
        w_z = torch.sigmoid(selector_memory(memory_norm)).float().t()  # (1, N)
    w_f = (w_f.shape[0] / w_f.sum(dim=0)) * w_f  # mean 1 over the M features
    if memory_weighting == "released":
        # Released behaviour: the rescaling runs over the size-1 axis of the (1, N) row,
        # so each weight is divided by itself and every memory weight equals 1 (up to
        # rounding; the selector gets a near-zero gradient).
        w_z = (w_z.shape[0] / w_z.sum(dim=0)) * w_z
    else:
        # "mean": the documented intent, rescaled to mean 1 over the N memory vectors.
        w_z = (w_z.shape[1] / w_z.sum(dim=1, keepdim=True)) * w_z
    with _float32_region(features_c.device):
        weighted = distances * w_f * w_z
        return weighted.mean()


def separation_loss(features: torch.Tensor, labels: torch.Tensor, memory: Sequence[torch.Tensor | None],
                    feature_selectors: Sequence[nn.Module], memory_selectors: Sequence[nn.Module],
                    memory_weighting: str = "released") -> torch.Tensor:
    """Inter-class separation loss L_cs, Eq. (4) of SS-Net.

    ``L = (1/C) * sum_c mean_{j in F_c, i in Z_c} (1 - cos(f_j, z_i)) * w_f[j] * w_z[i]``

    ``w_f = sigmoid(feature_selectors[c](f.detach()))`` rescaled to mean 1 over
    the class's features. Class c contributes only if its memory holds more than
    one vector and more than one feature has label c (otherwise 0, but it still
    counts in C).

    Args:
        features: (M, D) features after projection and prediction heads.
        labels: (M,) integer labels (true labels or pseudo-labels).
        memory: C entries, None or (N_c, D) (``PrototypeMemory.memory``); detached here.
        feature_selectors: ``contrastive_class_selector_<c>`` modules, indexable by c.
        memory_selectors: ``contrastive_class_selector_memory<c>`` modules, indexable by c.
        memory_weighting: ``"released"`` (default): each memory weight is
            ``w_i / w_i = 1``, what the released code computes;
            ``"mean"``: ``sigmoid(memory_selectors[c](normalize(z)))`` rescaled to
            mean 1 over the N_c vectors (the method's description).

    Returns:
        float32 scalar tensor (a constant 0 without graph when no class contributes).
        Computed in float32 with autocast off (normalisation, distances, both
        selectors, weights), whatever the dtype of ``features`` and ``memory``.

    One host synchronisation (the class sizes, :func:`split_by_class`), none when no
    memory entry holds more than one vector.

    Raises:
        ValueError: on mismatched shapes, too few selectors, out-of-range labels or
            an unknown ``memory_weighting``.
    """
    if memory_weighting not in MEMORY_WEIGHTINGS:
        raise ValueError(
            f"separation_loss: memory_weighting must be one of {MEMORY_WEIGHTINGS}, got {memory_weighting!r}."
        )
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"separation_loss: features must be (M, D) and labels (M,), got {tuple(features.shape)} "
            f"and {tuple(labels.shape)}."
        )
    num_classes = len(memory)
    if len(feature_selectors) < num_classes or len(memory_selectors) < num_classes:
        raise ValueError(
            f"separation_loss: need one feature selector and one memory selector per class ({num_classes}), "
            f"got {len(feature_selectors)} and {len(memory_selectors)}."
        )
    if not _memory_usable(memory):
        return torch.zeros((), dtype=torch.float32, device=features.device)  # nothing to compare with: no split
    groups = split_by_class(features, labels, num_classes)
    return _loss_from_groups(groups, memory, feature_selectors, memory_selectors, memory_weighting,
                             features.device)


def _memory_usable(memory: Sequence[torch.Tensor | None]) -> bool:
    """Whether some class's memory holds more than one vector (else the loss is a constant 0)."""
    return any(m is not None and m.shape[0] > 1 for m in memory)


def _loss_from_groups(groups: Sequence[torch.Tensor], memory: Sequence[torch.Tensor | None],
                      feature_selectors: Sequence[nn.Module], memory_selectors: Sequence[nn.Module],
                      memory_weighting: str, device: torch.device) -> torch.Tensor:
    """``(1/C) * sum_c L_c`` over the classes with >1 memory vectors and >1 features; ``groups[c]`` is (M_c, D)."""
    num_classes = len(memory)
    loss = torch.zeros((), dtype=torch.float32, device=device)
    for c in range(num_classes):
        memory_c = memory[c]
        features_c = groups[c]
        if memory_c is None or memory_c.shape[0] <= 1 or features_c.shape[0] <= 1:
            continue  # released behaviour; also the selectors' BatchNorm needs >= 2 rows in train mode
        loss = loss + _class_term(features_c, memory_c, feature_selectors[c], memory_selectors[c], memory_weighting)
    return loss / num_classes


class SeparationHeads(NamedTuple):
    """The four heads :func:`separation_step` needs, for users with their own heads.

    SS-Net's V-Net / U-Net carry them as attributes and are passed as they are.
    """

    projection_head: nn.Module  #: (n, F) -> (n, D), run in eval mode for the memory candidates
    prediction_head: nn.Module  #: (n, D) -> (n, D)
    feature_selectors: Sequence[nn.Module]  #: per class, (n, D) -> (n, 1) scores of the features
    memory_selectors: Sequence[nn.Module]  #: per class, (n, D) -> (n, 1) scores of the memory


def _heads(heads: object) -> SeparationHeads:
    """The four heads of ``heads``, read from its attributes."""
    missing = [n for n in SeparationHeads._fields if not hasattr(heads, n)]
    if missing:
        raise ValueError(f"separation_step: heads ({type(heads).__name__}) lacks the attribute(s) {missing}; "
                         "pass SS-Net's network or a SeparationHeads(...).")
    return SeparationHeads(*(getattr(heads, n) for n in SeparationHeads._fields))


def separation_step(features: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, labeled_bs: int,
                    memory: PrototypeMemory, heads: object, *,
                    memory_weighting: str = "released") -> tuple[torch.Tensor, torch.Tensor]:
    """One SS-Net separation step (steps 2-4 of a training iteration); returns ``(L_cs^l, L_cs^u)``.

    1. predictions = argmax of the labeled probs, pseudo-labels = argmax of the
       unlabeled probs;
    2. candidates = labeled voxels with prediction == label and prediction > 0;
       their features (channels-last) go through ``projection_head`` in eval mode
       without gradient (every submodule's mode is restored afterwards, also on
       an exception) and update ``memory``;
    3. ``L_cs^l`` = :func:`separation_loss` (Eq. (4)) of all labeled voxel features
       -> projection_head -> prediction_head (current mode, with gradient),
       grouped by the TRUE labels;
    4. ``L_cs^u`` = the same for all unlabeled voxel features, grouped by the
       pseudo-labels.

    SS-Net weights them as ``w(t) * 0.1 * (L_cs^l + L_cs^u)`` in the total loss.

    Args:
        features: (B, F, *spatial) decoder features from the train-mode forward,
            ``*spatial`` = (H, W), (H, W, D) with D the depth, or (N,) for point sets.
        probs: (B, C, *spatial) softmax probabilities of the same forward.
        labels: (labeled_bs, *spatial) or (labeled_bs, 1, *spatial) integer labels of
            the first ``labeled_bs`` samples.
        labeled_bs: number of labeled samples at the start of the batch (1..B).
        memory: the :class:`PrototypeMemory` (updated in place).
        heads: any object with the attributes ``projection_head`` ((n, F) -> (n, D)),
            ``prediction_head`` ((n, D) -> (n, D)), ``feature_selectors`` and
            ``memory_selectors`` (per class, see :func:`separation_loss`): SS-Net's
            V-Net / U-Net, or a :class:`SeparationHeads`.
        memory_weighting: see :func:`separation_loss`.

    Returns:
        ``(loss_labeled, loss_unlabeled)``, float32 scalars (the unlabeled loss is 0
        when ``labeled_bs == B``).

    Host synchronisations: exactly ONE per call. The sizes that decide tensor
    shapes (candidates per class, labeled voxels per true class, unlabeled voxels
    per pseudo-label) are counted on the device - one stable sort and one count
    per grouping, no ``nonzero`` - and read together by a single ``.tolist()``.
    The results are bit-identical to a boolean candidate selection followed by
    :func:`PrototypeMemory.update` and two :func:`separation_loss` calls (same rows
    in the same order in every group and in the memory).

    Mixed precision: under ``torch.autocast`` the heads run in the autocast dtype,
    the memory is stored in float32 and the loss is computed in float32.

    Raises:
        ValueError: on inconsistent shapes, a rank other than 1, 2 or 3 spatial dims,
            ``labeled_bs`` outside 1..B, ``heads`` without the four attributes, fewer
            selectors than ``memory.num_classes``, an unknown ``memory_weighting``, or
            (as :func:`split_by_class`) candidate labels, true labels or pseudo-labels
            outside ``0..memory.num_classes-1`` where they would be grouped.
    """
    projection_head, prediction_head, feature_selectors, memory_selectors = _heads(heads)
    if features.dim() not in (3, 4, 5) or probs.dim() != features.dim():
        raise ValueError(
            f"separation_step: features {tuple(features.shape)} and probs {tuple(probs.shape)} must both be "
            "(B, channels, *spatial) with 1, 2 or 3 spatial dims."
        )
    batch, spatial = features.shape[0], tuple(features.shape[2:])
    if probs.shape[0] != batch or tuple(probs.shape[2:]) != spatial:
        raise ValueError(
            f"separation_step: probs {tuple(probs.shape)} do not match features {tuple(features.shape)} "
            "in batch or spatial size."
        )
    if not 1 <= labeled_bs <= batch:
        raise ValueError(f"separation_step: labeled_bs must be in 1..{batch} (the batch size), got {labeled_bs}.")
    if labels.dim() == features.dim() and labels.shape[1] == 1:
        labels = labels[:, 0]
    if tuple(labels.shape) != (labeled_bs,) + spatial:
        raise ValueError(
            f"separation_step: labels {tuple(labels.shape)} must be (labeled_bs, *spatial) = "
            f"{(labeled_bs,) + spatial}: the labels of the first labeled_bs samples only."
        )
    labels = _check_labels(labels, "separation_step")
    if memory_weighting not in MEMORY_WEIGHTINGS:
        raise ValueError(
            f"separation_step: memory_weighting must be one of {MEMORY_WEIGHTINGS}, got {memory_weighting!r}."
        )
    num_classes = memory.num_classes
    memory._check_selectors(feature_selectors)
    if len(memory_selectors) < num_classes:
        raise ValueError(f"separation_step: need one memory selector per class ({num_classes}), "
                         f"got {len(memory_selectors)}.")
    channels = features.shape[1]
    device = features.device

    with torch.no_grad():
        prediction = probs[:labeled_bs].max(dim=1).indices  # (labeled_bs, *spatial)
        pseudo_label = probs[labeled_bs:].max(dim=1).indices.reshape(-1)  # (n_u,), n_u = (B - labeled_bs) * S
        labels_flat = labels.reshape(-1)  # (n_l,), n_l = labeled_bs * S, in row-major (nonzero) order
        candidate_mask = ((prediction == labels) & (prediction > 0)).reshape(-1)  # (n_l,)

        # Device-side groupings (no host synchronisation yet), each a stable sort and a count:
        # candidates: key = class (C for an out-of-range class, C + 1 for a non-candidate), so
        # order_cand[:n] lists the candidates class by class, each class in row-major order.
        class_key = torch.where((labels_flat >= 0) & (labels_flat < num_classes), labels_flat,
                                torch.full_like(labels_flat, num_classes))
        cand_key = torch.where(candidate_mask, class_key, torch.full_like(class_key, num_classes + 1))
        order_cand, counts_cand = _sorted_counts(cand_key, num_classes + 2)  # (n_l,), (C + 2,)
        order_lab, counts_lab = _sorted_counts(class_key, num_classes + 1)  # true labels: (n_l,), (C + 1,)
        order_unl, counts_unl = _class_order(pseudo_label, num_classes)  # pseudo-labels: (n_u,), (C + 1,)
        # THE host synchronisation: every group size at once.
        counts = torch.cat([counts_cand, counts_lab, counts_unl]).tolist()
    sizes_cand = counts[: num_classes + 2]
    sizes_lab = counts[num_classes + 2: 2 * num_classes + 3]
    sizes_unl = counts[2 * num_classes + 3:]
    if sizes_cand[num_classes] > 0:  # candidate labels >= memory.num_classes (probs have more classes)
        raise _outside_error(sizes_cand[num_classes], num_classes)
    num_candidates = sum(sizes_cand[:num_classes])

    flat_labeled = features.movedim(1, -1)[:labeled_bs].reshape(-1, channels)  # (n_l, F), channels-last
    with torch.no_grad():
        by_class = order_cand[:num_candidates]  # flat indices of the candidates, grouped by class
        row_major = torch.sort(by_class).values  # the same indices in row-major order (what nonzero gives)
        position = torch.searchsorted(row_major, by_class)  # row of each grouped candidate in row_major
        candidate_features = flat_labeled.index_select(0, row_major)  # (n, F)
        # projected in row-major order as a boolean selection would give them, then grouped by class
        with eval_mode(projection_head):
            projected = _at_least_float32(projection_head(candidate_features))  # (n, D), stored in float32
        grouped = projected.index_select(0, position)
    memory._store(torch.split(grouped, sizes_cand[:num_classes]), feature_selectors)

    predicted_labeled = prediction_head(projection_head(flat_labeled))
    loss_labeled = _step_loss(predicted_labeled, order_lab, sizes_lab, memory.memory, feature_selectors,
                              memory_selectors, memory_weighting, device)

    if labeled_bs == batch:  # shape-based branch: no unlabeled samples in this batch
        loss_unlabeled = torch.zeros((), dtype=torch.float32, device=device)
    else:
        unlabeled_features = features.movedim(1, -1)[labeled_bs:].reshape(-1, channels)
        predicted_unlabeled = prediction_head(projection_head(unlabeled_features))
        loss_unlabeled = _step_loss(predicted_unlabeled, order_unl, sizes_unl, memory.memory, feature_selectors,
                                    memory_selectors, memory_weighting, device)
    return loss_labeled, loss_unlabeled


def _step_loss(features: torch.Tensor, order: torch.Tensor, sizes: list[int],
               memory: Sequence[torch.Tensor | None], feature_selectors: Sequence[nn.Module],
               memory_selectors: Sequence[nn.Module], memory_weighting: str, device: torch.device) -> torch.Tensor:
    """:func:`separation_loss` of ``features`` (M, D) from a precomputed grouping.

    ``order`` (M,) is the stable class order and ``sizes`` the C + 1 host-side group
    sizes (the last one: out-of-range labels), as :func:`_class_order` gives them.
    """
    num_classes = len(memory)
    if not _memory_usable(memory):
        return torch.zeros((), dtype=torch.float32, device=device)  # as separation_loss: no split
    if sizes[num_classes] > 0:
        raise _outside_error(sizes[num_classes], num_classes)
    groups = torch.split(features[order], sizes[:num_classes])
    return _loss_from_groups(groups, memory, feature_selectors, memory_selectors, memory_weighting, device)
