"""The names of the CPU kernel variants, apart from their Numba code.

:mod:`shallowcnn.kernels.tiles` implements the variants and
:mod:`shallowcnn.kernels.autotune` chooses among them. The names live here, in a module
that imports nothing, so that the autotuner (which the ``tune`` command and so every
start of the command line imports) does not load Numba just to know them.
"""

# name -> (FB filters per block, RP output rows per pass); the first is the default
# (the autotuner's choice where nothing is timed: tests, a pinned "default")
TILE_VARIANTS = {"f4r2": (4, 2), "f4r1": (4, 1), "f8r1": (8, 1)}

# The fused conv + ReLU + max pool also has two Winograd variants: "wino" (kernels/winograd.py,
# F(4, 3) down the columns: half the multiply-adds) and "wino2d" (kernels/winograd2d.py,
# F(3 x 3, 3 x 3): a third); float32 results within a few 1e-6 of the direct sums, not equal
# to them. The default stays the direct f4r2, so pinned runs (tests) give the same numbers
# on every CPU. The scan's block max (kernels/cpu_blockmax.py) has the tile variants and "wino":
# its 16 x 16 blocks are whole groups of 4 rows, not of 3.
BLOCKMAX_VARIANTS = (*TILE_VARIANTS, "wino")
FUSED_VARIANTS = (*BLOCKMAX_VARIANTS, "wino2d")

# The few-filter tile (conv1): name -> gmax, the largest group of filters whose sums one
# pass carries (G chains per vector of columns, G*K weights held in registers); the first
# is the default.
SMALL_F_VARIANTS = {"g3": 3, "g2": 2, "g4": 4}

# conv1's few-filter path has them too: winograd.conv_dense and winograd2d.conv_dense, the
# same passes writing the whole map (6 filters padded to two blocks of 4). The direct g3
# stays its default.
SMALL_F_FAMILY = (*SMALL_F_VARIANTS, "wino", "wino2d")

# The network's two convolutions as two kernels ("separate": conv1, then the fused conv2, each
# its own choice) or as one parallel loop over patches, both in F(3 x 3, 3 x 3)
# (winograd2d.stack_max), timed against each other where both layers fit the 2-D grid;
# "separate" is the default.
STACK_VARIANTS = ("separate", "wino2d")
