"""The paper's recipe, written once (Luna-Lozoya et al., sections 3-4; docs/design.md, "The network").

Every default that restates the paper starts from :data:`PAPER`: the network
(:class:`~shallowcnn.model.ShallowCNN`, :class:`~shallowcnn.layers.Dropout`), the optimiser
(:class:`~shallowcnn.optim.Adam`), the training settings
(:class:`~shallowcnn.train.TrainConfig`), the decision threshold
(:mod:`shallowcnn.evaluate`), the search's reference row (``search.space.PAPER_CHOICE``)
and the PyTorch twin. Change the recipe here and everything follows.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRecipe:
    """The network's sizes and its training, as the paper gives them."""
    channels: tuple = (6, 16)       # filters of conv1 and conv2
    kernel_size: int = 9            # both convolutions, 'valid'
    p_drop: float = 0.2             # dropout probability (the paper keeps 80% of the units)
    lr: float = 1e-3                # Adam's learning rate
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7               # Keras' epsilon, not the 1e-8 of Kingma and Ba
    batch_size: int = 64
    epochs: int = 100               # keeping the epoch with the best validation accuracy
    threshold: float = 0.5          # probability from which a patch holds a cluster


PAPER = PaperRecipe()
