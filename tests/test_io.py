"""Readers, the input gate and the atomic writer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from vae_anomaly.deploy.io import atomic_write, read_matrix
from vae_anomaly.deploy.tables import CsvFormat
from vae_anomaly.deploy.validation import check_array
from vae_anomaly.errors import InputValidationError, OutputWriteError


def test_npy_npz_and_csv_read_the_same_values(tmp_path, rng):
    X = rng.standard_normal((7, 3))
    np.save(tmp_path / "a.npy", X)
    np.savez(tmp_path / "b.npz", X=X, y=np.zeros(7))
    np.savez(tmp_path / "c.npz", only=X)
    np.savetxt(tmp_path / "d.csv", X, delimiter=",", fmt="%.17g")
    np.savetxt(tmp_path / "e.csv", X, delimiter=",", fmt="%.17g", header="f1,f2,f3", comments="")
    for name in ("a.npy", "b.npz", "c.npz", "e.csv"):
        np.testing.assert_array_equal(read_matrix(tmp_path / name), X, err_msg=name)
    np.testing.assert_array_equal(read_matrix(tmp_path / "d.csv", CsvFormat(header=False)), X)
    # read by position, a first line of numbers only is data (np.savetxt writes no header), with a warning
    with pytest.warns(UserWarning, match="first line holds numbers only"):
        np.testing.assert_array_equal(read_matrix(tmp_path / "d.csv"), X)


@pytest.mark.parametrize("arr", [
    np.arange(12, dtype=np.int64).reshape(4, 3),
    np.arange(12, dtype=">f8").reshape(4, 3),
    np.asfortranarray(np.arange(12, dtype=np.float64).reshape(4, 3)),
    np.arange(12, dtype=np.float16).reshape(4, 3),
])
def test_numeric_dtypes_and_orders_become_the_same_float32_matrix(arr):
    out = check_array(arr)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.arange(12, dtype=np.float32).reshape(4, 3))


def test_one_dimensional_input_is_refused_with_the_fix():
    with pytest.raises(InputValidationError, match=r"1-D .*reshape\(-1, 1\)"):
        check_array(np.zeros(5), name="new.npy")


def test_nan_is_refused_with_count_and_first_position():
    X = np.zeros((4, 3))
    X[2, 1] = np.nan
    X[3, 0] = np.inf
    with pytest.raises(InputValidationError, match=r"new.npy: X holds 2 NaN .*row 2, column 1"):
        check_array(X, name="new.npy")


def test_wrong_feature_count_names_both_counts():
    with pytest.raises(InputValidationError, match="X has 8 features, but the model expects 6"):
        check_array(np.zeros((2, 8)), n_features=6)


def test_values_beyond_float32_are_refused():
    with pytest.raises(InputValidationError, match="float32"):
        check_array(np.array([[1e300, 0.0]]))


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(InputValidationError, match="file not found"):
        read_matrix(tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(InputValidationError, match="unsupported file type"):
        read_matrix(tmp_path / "x.txt")


def test_object_npy_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputValidationError, match="dtype object"):
        read_matrix(tmp_path / "o.npy")


def test_truncated_npy_and_header_bomb_are_refused_before_allocation(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((100, 4)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-50])
    with pytest.raises(InputValidationError, match="truncated"):
        read_matrix(tmp_path / "t.npy")
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)}
    with open(tmp_path / "bomb.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    with pytest.raises(InputValidationError, match="truncated"):
        read_matrix(tmp_path / "bomb.npy")


def test_csv_non_numeric_cell_and_ragged_row_are_located(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(InputValidationError, match=r"column 'b', data row 1, holds 'x'"):
        read_matrix(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(InputValidationError, match="data row 1 has 1 cells; expected 2"):
        read_matrix(tmp_path / "ragged.csv")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(dest) as f:
            f.write(b"partial")
            raise RuntimeError("killed")
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary file left behind
    with pytest.raises(OutputWriteError, match="does not exist"):
        with atomic_write(tmp_path / "missing" / "out.bin") as f:
            f.write(b"x")
