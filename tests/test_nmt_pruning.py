"""See et al.'s pruning schemes, ESE's load balancing and 12-bit weights on an LSTM translator.

Tiny model, generated toy pairs; the oracles are numpy. The gettext loader reads catalogs that
the test writes with polib (UTF-8 and ISO-8859-1, plural forms, fuzzy entries, duplicates).
"""

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.examples.datasets import gettext_pairs
from keras_compress.examples.translation import (
    BOS,
    EOS,
    PAD,
    Vocabulary,
    arrays,
    corpus_bleu,
    masked_loss,
    short_pairs,
    tokenize,
    translate,
    translation_model,
)
from keras_compress.pruning.masks import load_imbalance, pe_groups
from keras_compress.sharing.fixed_point import quantize_weights

LENGTH = 8
# One class per See et al. weight class: embeddings, each LSTM layer, attention, softmax.
GROUPS = {name: [f"{name}/.*"] for name in
          ("src_embed", "tgt_embed", "encoder_1", "encoder_2", "decoder_1", "decoder_2",
           "attention", "softmax")}  # fmt: skip


def toy_pairs(n=96):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(20)]
    pairs = []
    for _ in range(n):
        sentence = list(rng.choice(words, rng.integers(2, 6)))
        pairs.append((" ".join(sentence), " ".join(w.upper() for w in reversed(sentence))))
    return pairs


@pytest.fixture
def toy():
    pairs = toy_pairs()
    src = Vocabulary([tokenize(s) for s, _ in pairs], 50)
    tgt = Vocabulary([tokenize(t) for _, t in pairs], 50)
    x, tin, tout = arrays(pairs, src, tgt, LENGTH)
    model = kc.make_prunable(translation_model(len(src), len(tgt), embed=8, units=16))
    model.compile("adam", masked_loss)
    return model, (x, tin, tout)


def class_weights(model):
    """Each class's (signed) pruned weights, concatenated: the oracle's input."""
    out = {}
    for wrapper in kc.pruning_wrappers(model):
        for path, variable in zip(wrapper.weight_paths, wrapper.compressed_variables):
            name = f"{wrapper.layer.name}/{path}"
            group = next(g for g, pats in GROUPS.items() if name.startswith(g + "/"))
            out.setdefault(group, []).append(np.asarray(variable.numpy()).ravel())
    return {g: np.concatenate(parts) for g, parts in out.items()}


def class_sparsity(model):
    kept, total = {}, {}
    for wrapper in kc.pruning_wrappers(model):
        group = next(g for g in GROUPS if wrapper.layer.name == g)
        for mask in wrapper.masks:
            m = np.asarray(mask.numpy())
            kept[group] = kept.get(group, 0) + int(m.sum())
            total[group] = total.get(group, 0) + m.size
    return {g: 1 - kept[g] / total[g] for g in kept}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["class_blind", "class_uniform", "class_distribution"])
def test_each_scheme_reaches_its_defined_per_class_sparsity(toy, scheme):
    model, (x, tin, tout) = toy
    model([x[:1], tin[:1]])
    before = class_weights(model)
    n = sum(w.size for w in before.values())
    if scheme == "class_uniform":
        expected = {g: round(0.6 * w.size) / w.size for g, w in before.items()}
    else:  # the round(0.6 n) lowest over all classes, by |w| or by |w| / std of the class
        scores = {
            g: np.abs(w) / (np.std(w) if scheme == "class_distribution" else 1.0)
            for g, w in before.items()
        }
        cut = np.sort(np.concatenate(list(scores.values())))[round(0.6 * n) - 1]
        expected = {g: float(np.mean(s <= cut)) for g, s in scores.items()}
    callback = kc.MagnitudePruning(0.6, "constant", scheme, groups=GROUPS, frequency=1000)
    model.fit([x, tin], tout, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    got = class_sparsity(model)
    for group, value in expected.items():
        assert got[group] == pytest.approx(value, abs=1.5 / before[group].size), group
    assert 1 - sum((1 - got[g]) * before[g].size for g in got) / n == pytest.approx(0.6, abs=1 / n)


@pytest.mark.slow
def test_load_balanced_pruning_gives_every_pe_the_same_non_zeros(toy):
    model, (x, tin, tout) = toy
    callback = kc.MagnitudePruning(0.75, "constant", load_balance=4, frequency=1000)
    model.fit([x, tin], tout, epochs=1, batch_size=32, verbose=0, callbacks=[callback])
    for wrapper in kc.pruning_wrappers(model):
        for path, mask in zip(wrapper.weight_paths, wrapper.masks):
            m = np.asarray(mask.numpy())
            counts = np.bincount(pe_groups(m.shape, 4).ravel(), weights=m.ravel().astype(float))
            assert counts.max() - counts.min() <= 1, f"{wrapper.layer.name}/{path}: {counts}"
    with pytest.raises(ValueError, match="load_balance needs criterion 'class_uniform'"):
        kc.MagnitudePruning(0.5, load_balance=4, criterion="class_blind")


def test_unbalanced_pruning_is_imbalanced_where_balancing_is_not():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(64, 128)) * np.where(np.arange(128) % 8 < 2, 3.0, 1.0)  # 2 PEs loud
    plain = kc.pruning.masks.class_uniform_masks([w], [np.ones_like(w, bool)], [0.9])[0]
    groups = pe_groups(w.shape, 8)
    balanced = kc.pruning.masks.load_balanced_masks([w], [np.ones_like(w, bool)], [0.9], [groups])[
        0
    ]
    assert abs(int(plain.sum()) - int(balanced.sum())) <= 8  # per-PE rounding
    assert load_imbalance(balanced, groups) == 1.0 < 1.5 < load_imbalance(plain, groups)


def test_12_bit_weights_have_at_most_4096_levels_and_half_a_step_error(toy):
    model, (x, tin, _) = toy
    plain = kc.strip(model)
    plain([x[:1], tin[:1]])
    original = {v.path: np.asarray(v.numpy()) for v in plain.trainable_variables}
    report = quantize_weights(plain, bits=12, layers=[keras.layers.LSTM])
    assert len(report) == 8  # kernel and recurrent kernel of 4 LSTM layers
    for name, info in report.items():
        assert info["levels"] <= 4096
        assert info["max_error"] <= info["step"] / 2 * (1 + 1e-6), name
        assert np.log2(info["step"]) == round(np.log2(info["step"]))  # fixed point
    changed = [p for p, v in original.items() if not np.array_equal(v, _value(plain, p))]
    assert changed and all("encoder" in p or "decoder" in p for p in changed)


def _value(model, path):
    return next(np.asarray(v.numpy()) for v in model.trainable_variables if v.path == path)


@pytest.mark.slow
def test_translation_model_learns_the_toy_task_and_masks_padding(toy):
    model, (x, tin, tout) = toy
    model.compile(keras.optimizers.Adam(0.01), masked_loss)
    history = model.fit([x, tin], tout, epochs=30, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    assert np.all(tout[tin == PAD] == PAD)


@pytest.mark.slow
def test_dropout_acts_in_training_only_and_survives_pruning_wrappers(toy):
    _, (x, tin, tout) = toy
    model = translation_model(30, 30, embed=8, units=16, dropout=0.5)
    inputs = [x[:4], tin[:4]]
    assert not np.allclose(model(inputs, training=True), model(inputs, training=True))
    np.testing.assert_array_equal(model.predict(inputs, verbose=0), model(inputs))
    wrapped = kc.make_prunable(model)
    wrapped.compile("adam", masked_loss)
    wrapped.fit([x, tin], tout, epochs=1, batch_size=32, verbose=0,
                callbacks=[kc.MagnitudePruning(0.5, "constant", frequency=1)])  # fmt: skip
    plain = kc.strip(wrapped)
    assert plain.get_layer("encoder_1").dropout == 0.5
    assert kc.sparsity(plain)["total"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.slow  # 3 s: out of the quick subset
@pytest.mark.backends
def test_greedy_decoding_equals_decoding_each_prefix_alone(toy):
    """``translate`` feeds the prefix padded to the full length (one shape to compile)."""
    model, (x, _, _) = toy
    plain = kc.strip(model)
    source = x[:24]
    got = translate(plain, source, LENGTH)
    want = np.zeros((len(source), LENGTH), "int32")
    want[:, 0] = BOS
    for t in range(LENGTH - 1):  # the oracle: the prefix alone, as long as it is
        logits = plain.predict([source, want[:, : t + 1]], verbose=0)
        want[:, t + 1] = np.argmax(logits[:, t], axis=-1)
    want = want[:, 1:]
    assert len(np.unique(want)) > 3  # the random model says different things
    for row, expected in zip(got, want):
        end = int(np.argmax(expected == EOS)) + 1 if (expected == EOS).any() else len(expected)
        np.testing.assert_array_equal(row[:end], expected[:end])


def test_bleu_scores_the_kept_pairs_against_raw_references():
    pairs = [("Cannot open '%s'", "Kann '%s' nicht öffnen"), ("a " * 30, "b " * 30)]
    kept = short_pairs(pairs, length=20)
    assert kept == pairs[:1]
    reference = [t for _, t in kept]
    assert corpus_bleu([" ".join(tokenize(reference[0]))], reference) == pytest.approx(100.0)
    assert 0 < corpus_bleu(["Kann ' %s ' öffnen"], reference) < 100


def test_gettext_pairs_reads_catalogs_in_any_charset(tmp_path):
    polib = pytest.importorskip("polib", reason="the nmt extra installs polib")
    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    for name, encoding in (("alpha", "utf-8"), ("beta", "iso-8859-1")):
        catalog = polib.MOFile(encoding=encoding)
        catalog.metadata = {"Content-Type": f"text/plain; charset={encoding}"}
        catalog.append(polib.MOEntry(msgid="File not found", msgstr="Datei nicht gefunden"))
        catalog.append(polib.MOEntry(msgid=f"Größe of {name}", msgstr=f"Größe von {name}"))
        catalog.append(polib.MOEntry(msgid="%d file", msgid_plural="%d files",
                                     msgstr_plural={0: "%d Datei", 1: "%d Dateien"}))  # fmt: skip
        catalog.append(polib.MOEntry(msgid="Untranslated", msgstr=""))
        catalog.save(str(folder / f"{name}.mo"))
    splits, used = gettext_pairs(tmp_path, "de", ["alpha", "beta", "missing"])
    pairs = sorted(p for part in splits.values() for p in part)
    assert used == {"alpha": 4, "beta": 1}  # beta's shared messages are duplicates
    assert ("Größe of beta", "Größe von beta") in pairs and ("%d files", "%d Dateien") in pairs
    again, _ = gettext_pairs(tmp_path, "de", ["beta", "alpha"])
    assert {k: sorted(v) for k, v in again.items()} == {k: sorted(v) for k, v in splits.items()}
    with pytest.raises(FileNotFoundError, match="no gettext catalog"):
        gettext_pairs(tmp_path, "fr")


def test_load_balance_interleaves_a_transposed_convolutions_filters():
    # Its kernel is (h, w, filters, inputs): the PEs hold filters, as they hold Dense outputs.
    rng = np.random.default_rng(2)
    layers = [keras.layers.Conv2DTranspose(8, 3, name="t"), keras.layers.Flatten(),
              keras.layers.Dense(2, name="out")]  # fmt: skip
    model = keras.Sequential([keras.Input((4, 4, 6)), *layers])
    kernel = model.get_layer("t").get_weights()[0]
    kernel *= np.where(np.arange(8) % 4 == 0, 5.0, 1.0)[:, None]  # filters 0 and 4 loud
    model.get_layer("t").set_weights([kernel, model.get_layer("t").get_weights()[1]])
    wrapped = kc.make_prunable(model, layers=["t"])
    wrapped.compile("adam", "mse")
    callback = kc.MagnitudePruning(0.75, "constant", load_balance=4, frequency=1000)
    wrapped.fit(rng.normal(size=(8, 4, 4, 6)), rng.normal(size=(8, 2)), verbose=0,
                callbacks=[callback])  # fmt: skip
    mask = np.asarray(kc.pruning_wrappers(wrapped)[0].masks[0].numpy())  # (3, 3, 8, 6)
    per_pe = [int(mask[:, :, pe::4].sum()) for pe in range(4)]
    assert max(per_pe) - min(per_pe) <= 1, per_pe
