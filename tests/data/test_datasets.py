"""Every dataset by name (``--dataset``): preprocessing fitted on the training set, the network
each dataset gets, and the N-MNIST pipeline end to end on a real recording."""

import shutil

import pytest
import torch
from test_data_cifar import N as CIFAR_N
from test_data_cifar import fake_files, write_files
from test_data_emnist import N_TEST, N_TRAIN, split_files, write_split

from nsm.cli import main
from nsm.data import Dataset, load_dataset
from nsm.data import transforms as T
from nsm.data.cifar import CIFAR
from nsm.data.emnist import EMNIST_SPLITS
from nsm.training.config import TrainConfig
from nsm.training.loop import fit


@pytest.fixture
def small_cifar(monkeypatch, tmp_path):
    for k, spec in CIFAR.items():
        monkeypatch.setitem(CIFAR, k, dict(spec, sizes={"train": CIFAR_N * len(spec["train"]), "test": CIFAR_N}))
    write_files(tmp_path, 10, fake_files(10))
    write_files(tmp_path, 100, fake_files(100))
    return tmp_path


def test_cifar_standardized_with_training_statistics(small_cifar):
    from nsm.data.cifar import load_cifar

    raw_train, _ = load_cifar(small_cifar, train=True, num_classes=10)
    raw_test, _ = load_cifar(small_cifar, train=False, num_classes=10)
    ds = load_dataset("cifar10", small_cifar)
    assert ds.num_classes == 10 and ds.in_shape == (3, 32, 32)
    x = raw_train.double() / 255
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    expect = ((raw_test.double() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).float()
    assert torch.allclose(ds.test_x, expect, atol=1e-5)  # the test set uses the training statistics
    assert torch.allclose(ds.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert ds.train_transform is T.translate_flip
    assert load_dataset("cifar10", small_cifar, augment=False).train_transform is None
    coarse = load_dataset("cifar100", small_cifar, label="coarse")
    assert coarse.num_classes == 20 and load_dataset("cifar100", small_cifar).num_classes == 100


def test_cifar_zca_fitted_on_the_training_set(small_cifar):
    ds = load_dataset("cifar10", small_cifar, zca=True, zca_eps=0.1)
    from nsm.data.cifar import load_cifar

    tr = load_cifar(small_cifar, train=True, num_classes=10)[0].float() / 255
    te = load_cifar(small_cifar, train=False, num_classes=10)[0].float() / 255
    mean, w = T.fit_zca(tr, eps=0.1)
    assert torch.allclose(ds.test_x, T.apply_zca(te, mean, w), atol=1e-4)
    assert "ZCA" in ds.info["preprocessing"]


def test_emnist_letters_by_name(monkeypatch, tmp_path):
    for split, info in EMNIST_SPLITS.items():
        monkeypatch.setitem(EMNIST_SPLITS, split, dict(info, sizes=(N_TRAIN, N_TEST)))
    write_split(tmp_path / "emnist" / "gzip", split_files("letters", label_base=1))
    ds = load_dataset("emnist", tmp_path)
    assert ds.num_classes == 26 and ds.train_y.tolist() == [0, 1, 2, 3]
    assert ds.train_x.shape == (N_TRAIN, 1, 28, 28) and ds.train_x.max() <= 1


def test_unknown_dataset_and_option():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'; known: cifar10, cifar100, dvs-gesture"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match=r"dataset 'mnist' has no option\(s\) \['zca'\]"):
        load_dataset("mnist", zca=True)


def test_missing_datasets_say_what_to_download(tmp_path, capsys):
    for name, hint in (
        ("nmnist", "Train.zip"),
        ("dvs-gesture", "DvsGesture.tar.gz"),
        ("cifar10", "cifar-10-python.tar.gz"),
        ("emnist", "gzip.zip"),
    ):
        args = [
            "train",
            "--dataset",
            name,
            "--epochs",
            "1",
            "--data-dir",
            tmp_path / "empty",
            "--out",
            tmp_path,
            "--no-progress",
        ]
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2 and hint in err, (name, err)


def test_dvs_gesture_trains_on_the_table7_network(tmp_path):
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(6, 6, 64, 64, generator=g) < 0.05).float()
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    ds = Dataset("dvs-gesture", frames[:4], labels[:4], frames[4:], labels[4:], 11)
    config = TrainConfig.for_dataset(
        "dvs-gesture",
        epochs=1,
        samples=2,
        batch_size=2,
        out=str(tmp_path),
        model_options={"width": 0.0625},
        progress=False,
    )
    assert config.lr_step == 100
    summary = fit(config, dataset=ds, log=lambda s: None)
    assert summary["network"] == "bnsm-table7" and 0 <= summary["final_test_error"] <= 1


def test_nmnist_pipeline_on_a_real_recording(real_nmnist_file, tmp_path, capsys):
    """Reader -> 10 ON frames -> cache -> Table 6 network on 10x34x34 -> MC test, via the CLI.

    One real recording exists offline; each digit folder gets a copy, so this checks that the
    pipeline runs on real events, not what accuracy N-MNIST gives."""
    for split in ("Train", "Test"):
        for d in range(10):
            folder = tmp_path / "data" / "nmnist" / split / str(d)
            folder.mkdir(parents=True)
            shutil.copy(real_nmnist_file, folder / "00001.bin")
    args = [
        "train",
        "--model",
        "bnsm",
        "--dataset",
        "nmnist",
        "--epochs",
        "1",
        "--samples",
        "3",
        "--data-dir",
        tmp_path / "data",
        "--out",
        tmp_path / "runs",
        "--no-progress",
    ]
    assert main([str(a) for a in args]) == 0
    assert "test error (MC mean of softmax, S=3)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "data" / "nmnist" / "cache").iterdir()) == [
        "test-frames-v1.npz",
        "train-frames-v1.npz",
    ]
    ds = load_dataset("nmnist", tmp_path / "data")
    assert ds.in_shape == (10, 34, 34) and ds.train_x.shape[0] == 10
    assert set(ds.train_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(ds.train_x[0], ds.train_x[9])  # same recording, same frames


def test_cifar_trains_on_the_allconv_network_with_augmentation(small_cifar, tmp_path):
    config = TrainConfig.for_dataset(
        "cifar10",
        epochs=1,
        samples=2,
        batch_size=5,
        data_dir=str(small_cifar),
        out=str(tmp_path / "runs"),
        model_options={"width": 0.05},
        progress=False,
    )
    assert (config.lr, config.lr_schedule) == (1e-3, "linear")
    summary = fit(config, log=lambda s: None)
    assert summary["network"] == "bnsm-allconv" and summary["samples"] == 2
    assert 0 <= summary["final_test_error"] <= 1


def test_read_only_loading_writes_nothing_into_the_folder(tmp_path):
    """load_dataset(read_only=True) on a folder that is not the user's own (a checkpoint's
    recorded data folder): N-MNIST's and DVS Gesture's frames are built in memory, no cache
    is written; the same frames as a normal load, which writes its cache."""
    from test_data_dvsgesture import make_tree as make_gestures
    from test_data_nmnist import make_tree as make_recordings

    from nsm.data import load_dataset

    for name, make in (("nmnist", make_recordings), ("dvs-gesture", make_gestures)):
        root = tmp_path / name
        if name == "nmnist":
            make(root, "Train"), make(root, "Test")
        else:
            make(root)
        before = sorted(p for p in root.rglob("*"))
        ro = load_dataset(name, root, read_only=True)
        assert sorted(p for p in root.rglob("*")) == before, name  # nothing made, written or removed
        rw = load_dataset(name, root)
        assert len(sorted(root.rglob("*.npz"))) == 2, name  # the normal load caches both splits
        assert torch.equal(ro.train_x, rw.train_x) and torch.equal(ro.test_y, rw.test_y), name


def test_read_only_loading_never_downloads(tmp_path):
    from nsm.data import load_dataset

    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_dataset("mnist", tmp_path, read_only=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no option"):  # an internal switch, not a dataset option
        load_dataset("mnist", tmp_path, write_cache=False)


def test_the_shapes_known_before_loading_are_the_readers_shapes(
    small_cifar, monkeypatch, tmp_path, mnist_dir, fashion_dir
):
    """IN_SHAPES (what a run checks its model's options against before reading any data) is
    what each reader gives: real MNIST and Fashion-MNIST, the others from files written in
    their exact formats."""
    from test_data_dvsgesture import make_tree as make_gestures
    from test_data_nmnist import make_tree as make_recordings

    from nsm.data import DATASETS
    from nsm.data.datasets import IN_SHAPES

    for split, info in EMNIST_SPLITS.items():
        monkeypatch.setitem(EMNIST_SPLITS, split, dict(info, sizes=(N_TRAIN, N_TEST)))
    write_split(small_cifar / "emnist" / "gzip", split_files("letters", label_base=1))
    make_recordings(tmp_path / "events", "Train"), make_recordings(tmp_path / "events", "Test")
    make_gestures(tmp_path / "events")
    roots = {"mnist": mnist_dir, "fashion-mnist": fashion_dir, "nmnist": tmp_path / "events"}
    roots["dvs-gesture"] = tmp_path / "events"
    shapes = {
        name: load_dataset(name, roots.get(name, small_cifar), read_only=True).in_shape for name in DATASETS.names()
    }
    assert shapes == IN_SHAPES
