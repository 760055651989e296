"""Multi-layer perceptron: flattened pixels, or a pooled bag of token (and hashed n-gram) embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from experiments.core.errors import UserError
from experiments.core.rules import boolean, integer, number, one_of, require
from experiments.data.contract import output_size
from experiments.models.nets.blocks import ACTIVATIONS, make_activation

POOLINGS = ("mean", "l2")


class BagOfEmbeddings(nn.Module):
    """fastText-style text encoder: the pooled embeddings of a review's tokens and of its n-grams up to `ngrams`.

    N-grams are hashed into `ngram_buckets` extra rows of the same table, so word order within a short
    window counts without an n-gram vocabulary. Rows start at zero, so a bucket that no training review
    filled (an n-gram seen only at test time) adds nothing instead of noise. Padding is left out.
    - `binary`: each distinct token or n-gram counts once per review, as in the NBSVM baselines.
    - `pooling`: `mean` divides the sum by the number of features, `l2` by its square root (the sum of a
      unit-length binary vector), so longer reviews, which carry more evidence, give firmer logits.
    - `naive_bayes`: each feature is scaled by its naive-Bayes log-count ratio on the training reviews,
      log(P(feature | positive) / P(feature | negative)) (NBSVM, Wang & Manning 2012): a strong prior for
      two-class sentiment, set by `fit_to_training_data` before the first step.
    - `sparse`: the table gets sparse gradients, so a step updates only the rows its batch touched (millions
      of hashed rows, a few thousand used per batch); our Adam/AdamW/SGD take them.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        pad_index: int,
        ngrams: int = 1,
        ngram_buckets: int = 0,
        binary: bool = False,
        pooling: str = "mean",
        naive_bayes: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size, self.pad_index = vocab_size, pad_index
        self.ngrams, self.ngram_buckets, self.binary, self.pooling = ngrams, ngram_buckets, binary, pooling
        rows = vocab_size + ngram_buckets
        self.bag = nn.EmbeddingBag(rows, dim, mode="sum", padding_idx=pad_index, sparse=sparse)
        nn.init.zeros_(self.bag.weight)
        # Saved with the weights, so a reloaded net needs no training data to predict.
        self.register_buffer("feature_weights", torch.ones(rows) if naive_bayes else None)

    def feature_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids followed by hashed n-gram ids, one row per review; padding (and repeats, if binary) as pad."""
        pieces, hashed, is_pad = [tokens.long()], tokens.long(), tokens == self.pad_index
        for n in range(2, self.ngrams + 1):
            following = tokens[:, n - 1 :]
            hashed = hashed[:, :-1] * 1_000_003 + following  # wraps around in int64: still a fine hash
            is_pad = is_pad[:, :-1] | (following == self.pad_index)
            ngram_ids = self.vocab_size + hashed % self.ngram_buckets
            pieces.append(ngram_ids.masked_fill(is_pad, self.pad_index))
        ids = torch.cat(pieces, dim=1)
        if self.binary:  # sorted, a repeat sits next to its first occurrence: blank it out as padding
            ids = ids.sort(dim=1).values
            ids[:, 1:] = ids[:, 1:].masked_fill(ids[:, 1:] == ids[:, :-1], self.pad_index)
        return ids

    @torch.no_grad()
    def fit_to_training_data(self, tokens: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> None:
        """Set the naive-Bayes feature weights from the training reviews (labels 0 and 1), smoothed by one."""
        if self.feature_weights is None:
            return
        if labels.max() > 1:
            raise ValueError("naive-Bayes feature weights need two classes")
        device = self.feature_weights.device
        counts = torch.ones(2, len(self.feature_weights), device=device)
        for start in range(0, len(labels), chunk):
            ids = self.feature_ids(tokens[start : start + chunk].to(device))
            label = labels[start : start + chunk].to(device).view(-1, 1).expand_as(ids)
            real = ids != self.pad_index
            counts.view(-1).index_add_(
                0, label[real] * counts.shape[1] + ids[real], torch.ones_like(ids[real], dtype=counts.dtype)
            )
        ratios = counts / counts.sum(dim=1, keepdim=True)
        self.feature_weights.copy_((ratios[1] / ratios[0]).log())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = self.feature_ids(tokens)
        real = (ids != self.pad_index).float()
        count = real.sum(dim=1, keepdim=True).clamp(min=1)
        weights = real / (count if self.pooling == "mean" else count.sqrt())
        if self.feature_weights is not None:
            weights = weights * self.feature_weights[ids]
        return self.bag(ids, per_sample_weights=weights)


class MLP(nn.Module):
    def __init__(
        self,
        spec: dict,
        width: int = 256,
        depth: int = 2,
        activation: str = "relu",
        dropout: float = 0.1,
        embedding_dim: int = 64,
        ngrams: int = 1,
        ngram_buckets: int = 0,
        binary: bool = False,
        pooling: str = "mean",
        naive_bayes: bool = False,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        require(
            "model",
            width=(width, integer(1)),
            depth=(depth, integer(0)),
            activation=(activation, one_of(*ACTIVATIONS)),
            dropout=(dropout, number(0.0, 1.0)),
            embedding_dim=(embedding_dim, integer(1)),
            ngrams=(ngrams, integer(1)),
            ngram_buckets=(ngram_buckets, integer(0)),
            binary=(binary, boolean),
            pooling=(pooling, one_of(*POOLINGS)),
            naive_bayes=(naive_bayes, boolean),
            sparse=(sparse, boolean),
        )
        if ngrams > 1 and ngram_buckets < 1:
            raise UserError(f"model.ngrams={ngrams} needs hash buckets for the n-grams: set model.ngram_buckets")
        if spec["kind"] == "image":
            self.encode: nn.Module = nn.Flatten()
            features = math.prod(spec["shape"])
        elif spec["kind"] == "table":  # already numbers: standardised columns and one-hot categories
            self.encode = nn.Identity()
            features = spec["features"]
        else:
            self.encode = BagOfEmbeddings(
                spec["vocab_size"],
                embedding_dim,
                spec["pad_index"],
                ngrams,
                ngram_buckets,
                binary,
                pooling,
                naive_bayes,
                sparse,
            )
            features = embedding_dim
        # Sets the naive-Bayes weights from the whole training split before the first step (Model.on_fit_start).
        self.fit_to_training_data = self.encode.fit_to_training_data if naive_bayes and spec["kind"] == "text" else None
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(features, width), make_activation(activation), nn.Dropout(dropout)]
            features = width
        layers.append(nn.Linear(features, output_size(spec)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encode(x))
