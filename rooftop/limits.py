"""Every size threshold of Rooftop, its default, and what it trades. Modules import them from here.

Sizes are bytes unless they say elements. A threshold is a trade between memory, time and what a
pass may do; the comment says which way each side goes.
"""

from __future__ import annotations

# -- what folding may create ---------------------------------------------------------------------
# the largest tensor constant folding may materialize (--fold-limit): larger ones stay computed at
# run time. Higher: more folded work, a bigger file (an Expand of a weight-sized tensor lands in it).
FOLD_LIMIT = 1 << 20
# what folding may add to a model in all: the larger of FOLD_LIMIT and this share of its weights.
# Higher: more folds on models that build their weights at run time, and a file that grows that much.
FOLD_GROWTH_SHARE = 0.10
# constants this small (shape vectors, scalars, axes) fold free of the budget and are always
# materialized: they are what shape arithmetic reads, and they cannot bloat a file
SMALL_CONSTANT_BYTES = 4096
# initializers up to this many elements stay in the weightless copy shape inference works on (the
# rest become typed inputs): enough for every shape vector, without copying a weight
SHAPE_ARITHMETIC_ELEMENTS = 4096

# -- weights on disk, and what is held in memory --------------------------------------------------
# external data from this size on stays on disk (memory-mapped by onnxruntime, streamed to the
# output); an inline model this large works from a spilled copy. Lower: less memory, more file reads.
LAZY_FROM_BYTES = 8 << 20
# external tensors smaller than this are read at load (scales, norms, shapes: passes look at them)
LAZY_MIN_BYTES = 64 << 10
# from this many bytes of weights, timing sessions are not cached and garbage is collected after
# each comparison (a session holds its own prepacked copy of the weights): less memory, more time
LARGE_WEIGHT_BYTES = 64 << 20
# weights over this go to external data when written, and models over it are checked from disk
# (a protobuf holds 2 GB at most; the margin is for the graph itself)
EXTERNAL_DATA_THRESHOLD = int(1.8 * 2**30)
# models with more weights are timed one session at a time (blocks A B B A), never two sessions
# alive; a second runtime does not cross-check them unless asked. Wider intervals, half the memory.
INTERLEAVE_UP_TO = 1 << 30
# the memory goal: peak resident memory at most MEMORY_PER_SIZE times the weights, for models of
# MEMORY_GOAL_FROM or more; under it the libraries' own ~130 MB dominate and the goal means nothing
MEMORY_GOAL_FROM = 50 << 20
MEMORY_PER_SIZE = 3.0
# a graph signature hashes the bytes of initializers up to this many elements, and only the name,
# type and shape of larger ones (hashing their bytes costs seconds on a large model)
SIGNATURE_HASH_ELEMENTS = 1 << 18

__all__ = [
    "EXTERNAL_DATA_THRESHOLD",
    "FOLD_GROWTH_SHARE",
    "FOLD_LIMIT",
    "INTERLEAVE_UP_TO",
    "LARGE_WEIGHT_BYTES",
    "LAZY_FROM_BYTES",
    "LAZY_MIN_BYTES",
    "MEMORY_GOAL_FROM",
    "MEMORY_PER_SIZE",
    "SHAPE_ARITHMETIC_ELEMENTS",
    "SIGNATURE_HASH_ELEMENTS",
    "SMALL_CONSTANT_BYTES",
]
