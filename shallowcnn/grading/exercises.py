"""The graded exercises of the student notebooks: which function each one asks for, how it is
checked, what it is worth, and which parts of the package would answer it.

``shallowcnn grade`` finds a notebook's exercises here (by the ``NN_`` of its file name, or the
list in its metadata), builds the student's functions from the notebook and calls ``check``
with them. ``answers``: the package's names that solve the exercise; a student notebook must not
import them (``tests/test_exercises.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

POINTS = {"easy": 1, "medium": 2, "hard": 3}


@dataclass(frozen=True)
class Exercise:
    id: str                       # "3.4"
    notebook: str                 # the source's number, "03"
    title: str
    functions: tuple              # the student's functions the check receives, in order
    check: str                    # the name of a check in shallowcnn.grading
    level: str                    # easy / medium / hard
    answers: tuple = ()           # package names (modules or objects) that solve it

    @property
    def points(self) -> int:
        return POINTS[self.level]


EXERCISES = [
    Exercise("2.1", "02", "the seven-loop convolution", ("conv2d_loops",), "check_conv2d_forward", "easy",
             ("Conv2D", "reference", "conv2d_forward")),
    Exercise("2.2", "02", "one matrix product per kernel offset", ("conv2d_shifts",), "check_conv2d_forward",
             "medium", ("Conv2D", "reference", "conv2d_forward")),
    Exercise("2.3", "02", "im2col", ("conv2d_im2col",), "check_conv2d_forward", "hard",
             ("Conv2D", "reference", "conv2d_forward")),
    Exercise("3.1", "03", "dW and db of the convolution", ("conv2d_dW_loops",), "check_conv2d_dW", "medium",
             ("Conv2D", "reference", "conv2d_backward")),
    Exercise("3.2", "03", "dx of the convolution", ("conv2d_dx_loops",), "check_conv2d_dx", "medium",
             ("Conv2D", "reference", "conv2d_backward")),
    Exercise("3.3", "03", "ReLU backward", ("relu_backward",), "check_relu_backward", "easy", ("ReLU",)),
    Exercise("3.4", "03", "global max pool backward", ("global_maxpool_backward",),
             "check_global_maxpool_backward", "medium", ("GlobalMaxPool2D",)),
    Exercise("3.5", "03", "sparse conv + ReLU + max pool backward", ("conv_relu_maxpool_backward_sparse",),
             "check_sparse_backward", "hard", ("ConvReLUGlobalMaxPool", "reference", "conv_relu_maxpool_backward")),
    Exercise("4.1", "04", "dense backward", ("dense_backward",), "check_dense_backward", "easy", ("Dense",)),
    Exercise("4.2", "04", "fused BCE with logits", ("bce_with_logits",), "check_bce_with_logits", "medium",
             ("BinaryCrossEntropyWithLogits", "BinaryCrossEntropy", "losses")),
    Exercise("5.1", "05", "relative error", ("my_rel_error",), "check_rel_error", "easy",
             ("rel_error", "gradcheck")),
    Exercise("5.2", "05", "centred-difference gradient", ("num_grad",), "check_numerical_gradient", "medium",
             ("numerical_gradient", "gradcheck")),
    Exercise("6.1", "06", "one Adam step", ("adam_step",), "check_adam_step", "medium", ("Adam", "optim")),
    Exercise("6.2", "06", "inverted dropout", ("inverted_dropout",), "check_dropout", "easy", ("Dropout",)),
    Exercise("7.1", "07", "one training step", ("my_train_step",), "check_training_step", "medium",
             ("train_step",)),
    Exercise("10.1", "10", "the network's loss and gradients", ("network_loss_and_grads",),
             "check_network_gradients", "hard"),
    Exercise("10.2", "10", "training with your Adam: overfit 16 patches", ("train_network",),
             "check_network_overfits", "medium"),
    Exercise("10.3", "10", "predict, then train on phantom patches", ("train_network", "predict"),
             "check_phantom_accuracy", "medium"),
]


def for_notebook(number: str) -> list:
    """The exercises of notebook ``number`` ("03"), in order."""
    return [ex for ex in EXERCISES if ex.notebook == number]
