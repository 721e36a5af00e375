"""An LSTM encoder-decoder with attention (Luong et al. 2015, as See et al. 2016 prune) in Keras 3.

Embeddings, a 2-layer LSTM encoder and decoder, dot-product attention over the encoder states,
a tanh attentional layer and a softmax over the target vocabulary; trained with teacher
forcing, translated greedily by re-running the same model on the growing prefix (the decoder
is causal, so position ``t`` sees only the prefix). BLEU with ``sacrebleu`` (the ``nmt``
extra). ``examples/nmt/translation.py`` trains and prunes it; ``benchmarks/nmt.py`` measures.

Tokens: words, punctuation, and printf/brace placeholders (``%s``, ``%1$d``, ``{name}``) as one
token each, so the model can copy placeholders across.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
_TOKEN = re.compile(r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?[hlLqjzt]*[a-zA-Z%]|\{\w*\}|\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Words, punctuation and format placeholders.

    Example:
        >>> tokenize("Cannot open '%s': %1$d {name}s")
        ['Cannot', 'open', "'", '%s', "'", ':', '%1$d', '{name}', 's']
    """
    return _TOKEN.findall(text)


class Vocabulary:
    """The ``size`` most frequent tokens of a corpus plus the four special tokens.

    Example:
        >>> v = Vocabulary([["a", "b", "a"]], size=10)
        >>> v.encode(["a", "z"]), v.decode([4, 1, 3, 5])
        ([4, 1], ['a', '<unk>'])
    """

    def __init__(self, sentences: Sequence[Sequence[str]], size: int):
        counts = Counter(t for s in sentences for t in s)
        self.tokens = list(SPECIALS) + [t for t, _ in counts.most_common(size)]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token ids (unknown tokens: ``<unk>``)."""
        return [self.index.get(t, UNK) for t in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Tokens up to the first ``</s>``, without padding or ``<s>``."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.tokens[i])
        return out


def arrays(pairs, src_vocab: Vocabulary, tgt_vocab: Vocabulary, length: int):
    """``(source, decoder input, decoder target)`` id arrays, padded to ``length``.

    Pairs longer than ``length - 1`` tokens on either side are dropped.
    """
    src, tin, tout = [], [], []
    for s, t in pairs:
        s_ids, t_ids = src_vocab.encode(tokenize(s)), tgt_vocab.encode(tokenize(t))
        if len(s_ids) >= length or len(t_ids) >= length:
            continue
        src.append(s_ids + [PAD] * (length - len(s_ids)))
        tin.append([BOS] + t_ids + [PAD] * (length - 1 - len(t_ids)))
        tout.append(t_ids + [EOS] + [PAD] * (length - 1 - len(t_ids)))
    return np.array(src, "int32"), np.array(tin, "int32"), np.array(tout, "int32")


@dataclass(frozen=True)
class Corpus:
    """Vocabularies, training arrays and the test split (sources as ids, references as text)."""

    src: Vocabulary
    tgt: Vocabulary
    train: tuple[np.ndarray, np.ndarray, np.ndarray]
    test_pairs: list[tuple[str, str]]
    test_source: np.ndarray


def short_pairs(pairs, length: int) -> list[tuple[str, str]]:
    """The pairs of at most ``length - 1`` tokens on both sides (what ``arrays`` keeps).

    Example:
        >>> short_pairs([("a b", "c"), ("a b c", "d")], length=3)
        [('a b', 'c')]
    """
    return [p for p in pairs if max(len(tokenize(p[0])), len(tokenize(p[1]))) < length]


def prepare(train_pairs, test_pairs, length: int, vocab: int = 6000) -> Corpus:
    """Vocabularies from the training pairs; test pairs longer than ``length - 1`` dropped."""
    src = Vocabulary([tokenize(s) for s, _ in train_pairs], vocab)
    tgt = Vocabulary([tokenize(t) for _, t in train_pairs], vocab)
    test = short_pairs(test_pairs, length)
    return Corpus(src, tgt, arrays(train_pairs, src, tgt, length), test,
                  arrays(test, src, tgt, length)[0])  # fmt: skip


def translation_model(
    src_size: int,
    tgt_size: int,
    embed: int = 128,
    units: int = 256,
    layers: int = 2,
    dropout: float = 0.0,
) -> keras.Model:
    """The training model: ``[source ids, decoder input ids] -> logits`` per target position.

    Layer names are the weight classes of See et al.: ``src_embed``, ``tgt_embed``,
    ``encoder_1..L``, ``decoder_1..L``, ``attention`` (the attentional tanh layer), ``softmax``.
    ``dropout``: the rate on the non-recurrent connections (each LSTM layer's inputs and the
    attentional layer's output), as Luong et al.'s models (Zaremba et al. 2014) have it.

    Example:
        >>> translation_model(50, 60, embed=8, units=16).output.shape
        (None, None, 60)
    """
    source = keras.Input((None,), dtype="int32", name="source")
    target = keras.Input((None,), dtype="int32", name="target_in")
    h = keras.layers.Embedding(src_size, embed, mask_zero=True, name="src_embed")(source)
    for i in range(1, layers + 1):
        h = keras.layers.LSTM(units, return_sequences=True, dropout=dropout, name=f"encoder_{i}")(h)
    d = keras.layers.Embedding(tgt_size, embed, mask_zero=True, name="tgt_embed")(target)
    for i in range(1, layers + 1):
        d = keras.layers.LSTM(units, return_sequences=True, dropout=dropout, name=f"decoder_{i}")(d)
    context = keras.layers.Attention(name="dot_attention")([d, h])
    joined = keras.layers.Concatenate()([d, context])
    attentional = keras.layers.Dense(units, activation="tanh", name="attention")(joined)
    attentional = keras.layers.Dropout(dropout, name="attention_dropout")(attentional)
    logits = keras.layers.Dense(tgt_size, name="softmax")(attentional)
    return keras.Model([source, target], logits, name="lstm_attention_nmt")


@keras.saving.register_keras_serializable(package="nmt")
def masked_loss(y_true, logits):
    """Cross-entropy over the non-padding target positions (registered: clones recompile)."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    mask = keras.ops.cast(keras.ops.not_equal(y_true, PAD), loss.dtype)
    return keras.ops.sum(loss * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def translate(model: keras.Model, source: np.ndarray, length: int, batch: int = 256) -> np.ndarray:
    """Greedy decoding: ``length`` steps, each re-running the model on the prefix so far.

    The prefix is fed padded to ``length`` (the padding is masked, and position ``t`` sees
    only positions up to ``t``), so every step has one input shape: backends that compile per
    shape (JAX, PyTorch) compile once, not once per step.
    """
    out = np.zeros((len(source), length), "int32")
    out[:, 0] = BOS
    for t in range(length - 1):
        logits = model.predict([source, out], batch_size=batch, verbose=0)
        out[:, t + 1] = np.argmax(logits[:, t], axis=-1)
        done = np.any(out[:, 1 : t + 2] == EOS, axis=1)
        if done.all():
            break
    return out[:, 1:]


def translations(model, source, tgt_vocab: Vocabulary, length: int) -> list[str]:
    """The greedy translations of ``source`` as space-separated tokens."""
    return [" ".join(tgt_vocab.decode(row)) for row in translate(model, source, length)]


def bleu(model, source, references: Sequence[str], tgt_vocab: Vocabulary, length: int) -> float:
    """Corpus BLEU (sacrebleu, its default 13a tokenizer) of the greedy translations."""
    return corpus_bleu(translations(model, source, tgt_vocab, length), references)


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu) of tokenized hypotheses against the raw references.

    Example:
        >>> round(corpus_bleu(["Datei nicht gefunden ."], ["Datei nicht gefunden."]), 1)
        100.0
    """
    import sacrebleu

    refs = tokenized(references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [refs], force=True).score)


def tokenized(texts: Sequence[str]) -> list[str]:
    """Each text as its ``tokenize`` tokens joined by spaces, as the translations are.

    Example:
        >>> tokenized(["Datei '%s' fehlt."])
        ["Datei ' %s ' fehlt ."]
    """
    return [" ".join(tokenize(t)) for t in texts]
