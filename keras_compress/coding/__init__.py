"""Pure-numpy coding: canonical Huffman codes, sparse positions, entropy bounds.

Nothing here imports Keras or TensorFlow: the sidecar format and every decoder build on it.
"""

from keras_compress.coding import entropy, huffman, sparse_index
from keras_compress.coding.entropy import entropy_bits, entropy_bytes

__all__ = ["entropy", "entropy_bits", "entropy_bytes", "huffman", "sparse_index"]
