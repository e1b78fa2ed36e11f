"""Top-k error and per-class accuracy, counted so that shards and ranks add up exactly."""

from __future__ import annotations

import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) bool: the label is among the k highest scores.

    Ties at the k-th place count in the label's favour only if it strictly beats
    enough others: it is correct when fewer than k classes score strictly higher.
    With fewer than k classes every prediction is correct.
    """
    true = scores.gather(1, labels[:, None])
    higher = (scores > true).sum(dim=1)
    return higher < k


class Tally:
    """Running counts of top-1 / top-5 hits, overall and per class."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.n = 0
        self.top1 = 0
        self.top5 = 0
        self.class_total = torch.zeros(num_classes, dtype=torch.long)
        self.class_top1 = torch.zeros(num_classes, dtype=torch.long)

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Count a batch: scores (B, classes) and labels (B,)."""
        scores, labels = scores.detach().float().cpu(), labels.cpu()
        c1, c5 = topk_correct(scores, labels, 1), topk_correct(scores, labels, 5)
        self.n += len(labels)
        self.top1 += int(c1.sum())
        self.top5 += int(c5.sum())
        self.class_total += torch.bincount(labels, minlength=self.num_classes)
        self.class_top1 += torch.bincount(labels[c1], minlength=self.num_classes)

    def all_reduce(self, group=None) -> None:
        """Sum the counts over the processes of `group` (a no-op outside a job)."""
        from ..runtime.distributed import all_reduce_sum

        t = all_reduce_sum(
            torch.cat(
                [torch.tensor([self.n, self.top1, self.top5]), self.class_total, self.class_top1]
            ),
            group,
        )
        self.n, self.top1, self.top5 = int(t[0]), int(t[1]), int(t[2])
        k = self.num_classes
        self.class_total, self.class_top1 = t[3 : 3 + k], t[3 + k :]

    def result(self) -> dict:
        """images, top-1 and top-5 error, and per-class top-1 accuracy (None for an absent class)."""
        n = max(self.n, 1)
        per_class = [
            (int(c) / int(t)) if t else None
            for c, t in zip(self.class_top1.tolist(), self.class_total.tolist(), strict=True)
        ]
        return {
            "images": self.n,
            "top1_error": 1 - self.top1 / n,
            "top5_error": 1 - self.top5 / n,
            "per_class": per_class,
        }
