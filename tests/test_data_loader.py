"""data_loader.py: stratified split, 0-255 three-channel input, streaming datasets."""

import json

import numpy as np
import pandas as pd
import pytest

import data_loader
import preprocess


def fake_folder(tmp_path, n_bona, n_spoof, name="d", params=None):
    """A preprocessed folder with random arrays, as preprocess.py writes it."""
    out = tmp_path / name
    out.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_bona + n_spoof):
        label = "bonafide" if i < n_bona else "spoof"
        utt = f"U{i:04d}"
        np.save(out / f"{utt}.npy", rng.random((128, 128), dtype=np.float32))
        rows.append((utt, f"{utt}.npy", label, int(label == "spoof"),
                     "-" if label == "bonafide" else f"A0{i % 3 + 1}", "S1", "train"))
    pd.DataFrame(rows, columns=data_loader.MANIFEST_COLUMNS).to_csv(out / "manifest.csv",
                                                                    index=False)
    (out / "features.json").write_text(json.dumps(params or preprocess.feature_params()))
    return out


def test_stratified_split_sizes_and_determinism(tmp_path):
    df = data_loader.load_manifest(fake_folder(tmp_path, 50, 450))
    tr, va = data_loader.stratified_split(df, 0.2, seed=7)
    assert len(va) == 100 and len(tr) == 400
    assert (va["label"] == "bonafide").sum() == 10 and (va["label"] == "spoof").sum() == 90
    assert set(tr["utt_id"]).isdisjoint(va["utt_id"])
    assert set(tr["utt_id"]) | set(va["utt_id"]) == set(df["utt_id"])
    tr2, va2 = data_loader.stratified_split(df, 0.2, seed=7)
    assert list(va2["utt_id"]) == list(va["utt_id"])
    _, va3 = data_loader.stratified_split(df, 0.2, seed=8)
    assert set(va3["utt_id"]) != set(va["utt_id"])


def test_split_refuses_single_class_and_bad_fraction(tmp_path):
    df = data_loader.load_manifest(fake_folder(tmp_path, 0, 10))
    with pytest.raises(ValueError, match="at least 2 utterances of each label"):
        data_loader.stratified_split(df)
    with pytest.raises(ValueError, match="val_fraction"):
        data_loader.stratified_split(df, 1.5)


def test_model_input_is_three_channel_0_to_255():
    x = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    img = data_loader.to_model_input(x).numpy()
    assert img.shape == (2, 2, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img[..., 0], [[0, 127.5], [255, 63.75]])
    np.testing.assert_array_equal(img[..., 0], img[..., 1])
    np.testing.assert_array_equal(img[..., 0], img[..., 2])


def test_efficientnet_rescales_internally_so_0_255_is_its_input_range():
    """Keras' EfficientNetB0 starts with Rescaling(1/255): a [0, 1] input would be squashed to
    [0, 1/255] before the pretrained filters see it."""
    import keras

    b = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                          input_shape=(128, 128, 3))
    rescale = [layer for layer in b.layers if isinstance(layer, keras.layers.Rescaling)][0]
    assert rescale.scale == pytest.approx(1 / 255)
    assert b.layers.index(rescale) <= 2


def test_dataset_streams_arrays_in_manifest_order(tmp_path):
    out = fake_folder(tmp_path, 3, 4)
    df = data_loader.load_manifest(out)
    batches = list(data_loader.make_dataset(df, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 128, 128, 3), (3, 128, 128, 3)]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(x[5, ..., 1], np.load(out / "U0005.npy") * 255, rtol=1e-6)
    assert 0 <= x.min() and x.max() <= 255


def test_shuffled_dataset_is_seeded_and_complete(tmp_path):
    df = data_loader.load_manifest(fake_folder(tmp_path, 10, 10))

    def order(seed):
        ds = data_loader.make_dataset(df, batch_size=20, shuffle=True, seed=seed)
        x, _ = next(iter(ds))
        return x.numpy()[:, 0, 0, 0]

    a, b = order(1), order(1)
    np.testing.assert_array_equal(a, b)
    assert sorted(a) == sorted(order(2)) and not np.array_equal(a, order(2))


def test_dataset_rejects_arrays_of_the_wrong_shape(tmp_path):
    out = fake_folder(tmp_path, 2, 2)
    np.save(out / "U0001.npy", np.zeros((128, 400), np.float32))  # the original project's bug
    df = data_loader.load_manifest(out)
    with pytest.raises(Exception, match=r"U0001.npy: array shape \(128, 400\)"):
        list(data_loader.make_dataset(df, batch_size=4))


def test_official_partitions_must_share_feature_parameters(tmp_path):
    a = fake_folder(tmp_path, 3, 3, "train")
    b = fake_folder(tmp_path, 2, 2, "dev", params=preprocess.feature_params("resize"))
    with pytest.raises(ValueError, match="differ in: .*fit"):
        data_loader.load_splits(a, val_data=b)
    c = fake_folder(tmp_path, 2, 2, "dev2")
    tr, va, feats = data_loader.load_splits(a, val_data=c)
    assert (len(tr), len(va)) == (6, 4) and feats == preprocess.feature_params()


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run preprocess.py"):
        data_loader.load_manifest(tmp_path)
    out = fake_folder(tmp_path, 2, 2)
    m = pd.read_csv(out / "manifest.csv")
    m.loc[0, "target"] = 1
    m.to_csv(out / "manifest.csv", index=False)
    with pytest.raises(ValueError, match="target disagrees with label for 'U0000'"):
        data_loader.load_manifest(out)


def test_main_prints_counts_per_label_and_attack(tmp_path, capsys):
    out = fake_folder(tmp_path, 20, 30)
    data_loader.main([str(out), "--seed", "3"])
    text = capsys.readouterr().out
    assert "val_fraction=0.2, seed=3" in text
    table = [line.split() for line in text.splitlines()]
    assert ["bonafide", "-", "16", "4"] in table
    assert ["total", "40", "10"] in table
