"""Generated space files and label CSVs thrown at the loaders: each gives a valid object or the one-line
``ConfigError``, never another exception."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search._run import describe
from search._files import SECTIONS
from search._space import load_space
from trainables import ConfigError, DataConfig, load_dataset

from .._images import write_class_folders

PROPERTY = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["test_resnet", "resnet_nope", "ce", "focal", "asha", "tpe", "max", "min", "float", "int",
                     "categorical", "folder", "csv", "medmnist", "val_auroc", "1e-3", "", "auto"]),
    st.text(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=8)
param_keys = st.sampled_from(["lr", "epochs", "batch_size", "backbone", "loss", "focal_gamma", "image_size", "nonsense"])
param = st.fixed_dictionaries(
    {"type": st.sampled_from(["float", "int", "categorical", "uniform", None])},
    optional={"low": scalars, "high": scalars, "log": scalars, "step": scalars, "choices": st.lists(scalars, max_size=3),
              "default": scalars, "when": values},
)
good_data = st.sampled_from([{"source": "folder", "root": "/data/images"}, {"source": "medmnist", "dataset": "pneumoniamnist"}])
spaces = st.fixed_dictionaries(
    # Mostly a valid data section, so that the examples reach the sections after it.
    {"data": st.one_of(good_data, good_data, good_data, values,
                       st.fixed_dictionaries({"source": st.sampled_from(["folder", "csv", "medmnist", "nope"])},
                                             optional={"root": scalars, "dataset": scalars, "val_fraction": scalars}))},
    optional={
        "name": scalars,
        "fixed": st.dictionaries(param_keys, scalars, max_size=4) | values,
        "space": st.dictionaries(param_keys, param | values, max_size=3),
        "search": st.dictionaries(st.sampled_from(["metric", "mode", "n_trials", "sampler", "scheduler", "max_concurrent", "typo"]),
                                  values, max_size=3),
        "ensemble": values,
        "storage": scalars,
        "ray": values,
    },
)
extra_keys = st.dictionaries(st.sampled_from(list(SECTIONS) + ["serch", "daat", "x"]), values, max_size=2)


def _text(space: dict, extra: dict) -> str:
    return yaml.safe_dump({**space, **extra}, sort_keys=False, allow_unicode=True)


@PROPERTY
@given(space=spaces, extra=extra_keys, mangle=st.one_of(st.none(), st.text(max_size=20)))
def test_generated_space_files_load_or_fail_in_one_line(space, extra, mangle, tmp_path_factory):
    text = _text(space, extra)
    if mangle is not None:  # damaged YAML: text spliced into the middle
        cut = len(text) // 2
        text = text[:cut] + mangle + text[cut:]
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(text)
    try:
        loaded = load_space(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        return
    # What the commands do next with a loaded space must not fail either.
    # Without a trial count a sweep runs until its budget is spent: one of the two always ends it.
    assert (loaded.search.n_trials or 0) >= 1 or loaded.search.time_budget_s > 0
    assert isinstance(loaded.defaults(), dict)
    assert describe(loaded, run_dir="/tmp/runs").startswith("space ")


@pytest.fixture(scope="module")
def csv_images(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("csv-images") / "img", n_per_class=6, size=16)


good_cells = st.sampled_from(["0", "1", "0", "1", "-1", ""])
bad_cells = st.one_of(st.sampled_from(["2", "yes", "nan", "1.0", "normal", "", "no_such", "../x"]), st.text(max_size=4))
extra_headers = st.lists(st.sampled_from(["id", "label", "effusion", "nodule", "split", "path", "x"]), max_size=2)


@PROPERTY
@given(columns=st.lists(st.sampled_from(["label", "effusion", "nodule", "missing"]), min_size=1, max_size=2, unique=True),
       keep=st.booleans(), extra=extra_headers, n_rows=st.integers(0, 14), damage=st.lists(st.tuples(st.integers(0, 13), st.integers(0, 5), bad_cells), max_size=2),
       data=st.data())
def test_generated_label_csvs_load_or_fail_in_one_line(columns, keep, extra, n_rows, damage, data, csv_images, tmp_path_factory):
    # Mostly the header the data section names and plausible rows, then a few cells damaged.
    header = (["id"] + [c for c in columns if c != "missing"] if keep else []) + extra or ["x"]
    files = sorted(p.relative_to(csv_images).with_suffix("").as_posix() for p in csv_images.rglob("*.png"))
    rows = [[data.draw(st.sampled_from(files) if h == "id" else good_cells) for h in header] for _ in range(n_rows)]
    for r, c, value in damage:
        if r < len(rows):
            rows[r][c % len(header)] = value
    tmp = tmp_path_factory.mktemp("csv")
    csv = tmp / "labels.csv"
    csv.write_text("\n".join([",".join(header)] + [",".join(_quote(c) for c in r) for r in rows]) + "\n")
    try:
        config = DataConfig.from_dict({"source": "csv", "labels_csv": str(csv), "img_dir": str(csv_images),
                                       "label_columns": columns, "cache_dir": str(tmp / "cache")})
        ds = load_dataset(config, image_size=16, verbose=False)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).strip()
        return
    assert ds.num_classes >= 2 or ds.multilabel
    assert all(math.isfinite(float(v)) for v in ds.mean)


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n\r') else cell
