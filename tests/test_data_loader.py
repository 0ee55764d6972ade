"""data_loader.py: stratified split, 0-255 three-channel input, streaming datasets."""

import json

import numpy as np
import pandas as pd
import pytest

import data_loader
from deepfake_detector import augment
from deepfake_detector import features


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
    (out / "features.json").write_text(json.dumps(params or features.feature_params()))
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


def test_every_epoch_is_drawn_from_the_seed_and_its_number_alone():
    """Issue 21, item 11: a resumed run replayed epoch 0's order, because the order came from a
    random state living in the process. Now an epoch's order is a function of (seed, epoch)."""
    t = np.r_[np.zeros(7, int), np.ones(30, int)]
    for balanced in (False, True):
        a = data_loader.epoch_order(t, 4, 5, seed=1, balanced=balanced)
        np.testing.assert_array_equal(a, data_loader.epoch_order(t, 4, 5, seed=1,
                                                                 balanced=balanced))
        assert not np.array_equal(a, data_loader.epoch_order(t, 4, 6, seed=1, balanced=balanced))
        assert not np.array_equal(a, data_loader.epoch_order(t, 4, 5, seed=2, balanced=balanced))
    assert sorted(data_loader.epoch_order(t, 4, 3)) == list(range(37))  # every example once
    np.testing.assert_array_equal(data_loader.epoch_order(t, 4, 3, shuffle=False), range(37))
    assert len(data_loader.epoch_order(t, 4, 3, balanced=True)) == 40  # 10 full batches


def test_a_dataset_on_a_clock_set_to_epoch_k_reads_what_epoch_k_read(tmp_path):
    """What a resumed run relies on: a new dataset whose clock is set to epoch 2 (as
    ``clock.callback()`` does in ``fit``) yields the batches and augmentation draws that the
    third iteration of an uninterrupted dataset yielded."""
    from deepfake_detector.sampling import EpochClock

    df = data_loader.load_manifest(fake_folder(tmp_path, 6, 7))
    aug = augment.augmentation(freq_mask=30, time_mask=30)

    def epoch(ds):
        return np.concatenate([x.numpy() for x, _ in ds])

    whole = data_loader.make_dataset(df, 4, shuffle=True, seed=5, augment=aug,
                                     clock=EpochClock())
    epochs = [epoch(whole) for _ in range(3)]
    assert not np.array_equal(epochs[1], epochs[2])  # every iteration a new epoch
    clock = EpochClock()
    resumed = data_loader.make_dataset(df, 4, shuffle=True, seed=5, augment=aug, clock=clock)
    clock.callback().on_epoch_begin(2)
    np.testing.assert_array_equal(epoch(resumed), epochs[2])
    assert clock.epoch == 3
    assert resumed.cardinality().numpy() == 4  # known: Keras shows progress, no warning


def test_dataset_rejects_arrays_of_the_wrong_shape(tmp_path):
    out = fake_folder(tmp_path, 2, 2)
    np.save(out / "U0001.npy", np.zeros((128, 400), np.float32))  # the original project's bug
    df = data_loader.load_manifest(out)
    with pytest.raises(Exception, match=r"U0001.npy: array shape \(128, 400\)"):
        list(data_loader.make_dataset(df, batch_size=4))


def test_official_partitions_must_share_feature_parameters(tmp_path):
    a = fake_folder(tmp_path, 3, 3, "train")
    b = fake_folder(tmp_path, 2, 2, "dev", params=features.feature_params("resize"))
    with pytest.raises(ValueError, match="differ in: .*fit"):
        data_loader.load_splits(a, val_data=b)
    c = fake_folder(tmp_path, 2, 2, "dev2")
    tr, va, feats = data_loader.load_splits(a, val_data=c)
    assert (len(tr), len(va)) == (6, 4) and feats == features.feature_params()


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


# ----------------------------------------------------------------------------- imbalance


def test_class_weights_from_counts():
    # ASVspoof 2019 LA train: 2,580 bonafide, 22,800 spoof
    t = np.r_[np.zeros(2580, int), np.ones(22800, int)]
    w = data_loader.class_weights(t, "balanced")
    assert w[0] == pytest.approx(25380 / (2 * 2580)) and w[1] == pytest.approx(25380 / (2 * 22800))
    assert w[0] * 2580 == pytest.approx(w[1] * 22800)  # each class carries half the weight
    assert data_loader.class_weights(t, "0.9,0.1") == {0: 0.9, 1: 0.1}
    assert data_loader.class_weights(t, "none") is None
    assert data_loader.class_weights([0, 1, 1, 1], "balanced") == {0: 2.0, 1: pytest.approx(2 / 3)}
    for bad in ("heavy", "1,2,3", "0,1", "-1,1", "nan,1"):
        with pytest.raises(ValueError, match="expected 'none', 'balanced' or two positive"):
            data_loader.class_weights(t, bad)
    with pytest.raises(ValueError, match="need both classes"):
        data_loader.class_weights([1, 1, 1], "balanced")


@pytest.mark.parametrize("batch", [8, 7])
def test_balanced_sampler_yields_balanced_batches(batch):
    t = np.r_[np.zeros(5, int), np.ones(45, int)]  # 10% bonafide
    ds = data_loader.balanced_indices(t, batch, seed=3).batch(batch)
    epochs = [[b.numpy() for b in ds] for _ in range(2)]
    for batches in epochs:
        assert len(batches) == -(-50 // batch)  # as many batches as without balancing
        assert all(len(b) == batch for b in batches)
        for b in batches:
            n_bona = int((t[b] == 0).sum())
            assert n_bona in ((batch // 2,) if batch % 2 == 0 else (batch // 2, batch // 2 + 1))
        drawn = np.concatenate(batches)
        assert set(drawn[t[drawn] == 0]) == set(range(5))  # the minority class is oversampled
    assert not all(np.array_equal(a, b) for a, b in zip(*epochs))  # new draws every epoch
    again = [b.numpy() for b in data_loader.balanced_indices(t, batch, seed=3).batch(batch)]
    assert all(np.array_equal(a, b) for a, b in zip(again, epochs[0]))  # seeded
    with pytest.raises(ValueError, match="need both classes"):
        data_loader.balanced_indices(np.ones(5, int), 4)


def test_balanced_dataset_pairs_each_array_with_its_label(tmp_path):
    folder = fake_folder(tmp_path, 3, 17)
    df = data_loader.load_manifest(folder)
    ds = data_loader.make_dataset(df, 4, balanced=True, seed=1)
    stored = {data_loader.to_model_input(np.load(p)).numpy().tobytes(): y
              for p, y in zip(df["path"], df["target"])}
    n = 0
    for x, y in ds:
        assert sorted(y.numpy().tolist()) == [0, 0, 1, 1]
        for xi, yi in zip(x.numpy(), y.numpy()):
            assert stored[xi.tobytes()] == yi
            n += 1
    assert n == 20


# ----------------------------------------------------------------------------- augmentation


def test_augmentation_settings_are_checked():
    assert augment.augmentation() is None  # all off by default
    aug = augment.augmentation(freq_mask=8, noise_snr_db="10,30", lowpass_hz="3000,7000")
    assert aug["noise_snr_db"] == [10.0, 30.0] and aug["lowpass_hz"] == [3000.0, 7000.0]
    assert augment.needs_audio(aug) and not augment.needs_audio(
        augment.augmentation(freq_mask=8))
    with pytest.raises(ValueError, match="low-pass cutoff '3000,9000'"):
        augment.augmentation(lowpass_hz="3000,9000")
    with pytest.raises(ValueError, match="noise SNR '30,10'"):
        augment.augmentation(noise_snr_db="30,10")
    with pytest.raises(ValueError, match="expected two numbers"):
        augment.augmentation(noise_snr_db="loud")


def test_spec_augment_masks_with_the_mean_and_never_writes_the_input():
    rng = np.random.default_rng(0)
    x = rng.random((128, 128), dtype=np.float32)
    keep = x.copy()
    aug = augment.augmentation(freq_mask=20, time_mask=10, masks=2)
    widths = set()
    for seed in range(30):
        y = augment.augment_example(x, "", np.random.default_rng(seed), aug, None)
        np.testing.assert_array_equal(x, keep)
        rows = np.flatnonzero((y == np.float32(x.mean())).all(axis=1))
        cols = np.flatnonzero((y == np.float32(x.mean())).all(axis=0))
        assert len(rows) <= 40 and len(cols) <= 20  # two masks each, widths <= 20 and <= 10
        outside = np.ones_like(x, bool)
        outside[rows] = False
        outside[:, cols] = False
        np.testing.assert_array_equal(y[outside], x[outside])  # only masked cells change
        widths.add(len(rows))
    assert len(widths) > 3  # random widths
    y1 = augment.augment_example(x, "", np.random.default_rng(5), aug, None)
    y2 = augment.augment_example(x, "", np.random.default_rng(5), aug, None)
    np.testing.assert_array_equal(y1, y2)


def test_waveform_augmentation_crop_noise_and_lowpass(tmp_path):
    from conftest import tone, write_wav

    params = features.feature_params()
    n = params["clip_samples"]
    y = np.r_[tone(4.2, freq=200), tone(4.2, freq=600, seed=1)]  # 8.4 s, two halves
    wav = write_wav(tmp_path / "long.wav", y)
    start = features.compute_features(features.load_audio(wav), params)
    crop = augment.augmentation(random_crop=True)
    crops = [augment.augment_example(None, str(wav), np.random.default_rng(s), crop, params)
             for s in range(4)]
    assert all(c.shape == (128, 128) for c in crops)
    assert any(not np.allclose(c, start) for c in crops)  # another window than the start
    # a crop is the features of some window of the signal: the one its rng drew
    s0 = int(np.random.default_rng(0).integers(0, y.size - n + 1))
    np.testing.assert_allclose(crops[0], features.compute_features(
        features.load_audio(wav)[s0:s0 + n], params), atol=1e-6)

    low = augment.augmentation(lowpass_hz="2000,2000", p=1.0)
    lp = augment.augment_example(None, str(wav), np.random.default_rng(0), low, params)
    import librosa

    mel_hz = librosa.mel_frequencies(params["n_mels"] + 2, fmin=params["fmin"],
                                     fmax=params["fmax"])[1:-1]
    high = mel_hz > 4000
    assert lp[high].mean() < start[high].mean() - 0.1  # energy above the cutoff is removed

    noisy = augment.augmentation(noise_snr_db="0,0", p=1.0)
    nz = augment.augment_example(None, str(wav), np.random.default_rng(0), noisy, params)
    assert nz[high].mean() > start[high].mean() + 0.1  # white noise fills the quiet bands


def test_waveform_augmentation_needs_the_audio_column(tmp_path):
    df = data_loader.load_manifest(fake_folder(tmp_path, 2, 2))
    with pytest.raises(ValueError, match="no 'audio' column"):
        data_loader.make_dataset(df, 2, augment=augment.augmentation(random_crop=True),
                                 params=features.feature_params())


def test_a_duplicated_manifest_row_is_refused_not_counted_twice(tmp_path):
    folder = fake_folder(tmp_path, 2, 2)
    mf = folder / "manifest.csv"
    lines = mf.read_text().splitlines()
    mf.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(ValueError, match=r"manifest.csv: utterance .* listed more than once"):
        data_loader.load_manifest(folder)
