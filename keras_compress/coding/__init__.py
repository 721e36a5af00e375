"""Pure-numpy coding: Huffman and arithmetic codes, sparse positions, entropy bounds.

Nothing here imports Keras or TensorFlow: the sidecar format and every decoder build on it.
"""

from keras_compress.coding import arithmetic, entropy, huffman, sparse_index
from keras_compress.coding.entropy import entropy_bits, entropy_bytes

__all__ = ["arithmetic", "entropy", "entropy_bits", "entropy_bytes", "huffman", "sparse_index"]
