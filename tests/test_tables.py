"""Tables as users write them: pyarrow's CSV reader, column roles, the schema and its encoding (no training)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from vae_anomaly.deploy import schema, tables
from vae_anomaly.deploy.io import read_fit_table
from vae_anomaly.deploy.tables import CsvFormat
from vae_anomaly.errors import InputValidationError

ROWS = [["h1", "1.5", "tcp"], ["h2", "", "udp"], ["h,3", "2", "tcp"], ["h4", "-3e2", "icmp"]]


def _write(path, text: str, encoding: str = "utf-8") -> None:
    path.write_bytes(text.encode(encoding))


def _csv(rows, sep=",", eol="\n", header=True, quote_all=False) -> str:
    def cell(v):
        return f'"{v}"' if quote_all or sep in v or "," in v else v

    lines = ([sep.join(["host", "x", "proto"])] if header else []) + [sep.join(map(cell, r)) for r in rows]
    return eol.join(lines) + eol


CASES = {
    "header": (_csv(ROWS), CsvFormat()),
    "no header": (_csv(ROWS, header=False), CsvFormat(header=False)),
    "byte-order mark": ("\ufeff" + _csv(ROWS), CsvFormat()),
    "byte-order mark, no header": ("\ufeff" + _csv(ROWS, header=False), CsvFormat(header=False)),
    "quoted delimiters": (_csv(ROWS, quote_all=True), CsvFormat()),
    "semicolon": (_csv(ROWS, sep=";"), CsvFormat()),
    "semicolon given": (_csv(ROWS, sep=";"), CsvFormat(delimiter=";")),
    "tab": (_csv(ROWS, sep="\t"), CsvFormat()),
    "CRLF": (_csv(ROWS, eol="\r\n"), CsvFormat()),
}


@pytest.mark.parametrize("case", CASES)
def test_every_row_is_read_once_whatever_the_layout(tmp_path, case):
    text, fmt = CASES[case]
    _write(tmp_path / "t.csv", text)
    table = tables.read_table(tmp_path / "t.csv", fmt)
    assert table.num_rows == len(ROWS)
    names = ["host", "x", "proto"] if fmt.header else ["f0", "f1", "f2"]
    assert table.column_names == names
    assert table.column(names[0]).to_pylist() == [r[0] for r in ROWS]
    # the empty cell in a data row is a missing value, never a reason to drop or shift the row
    assert table.column(names[1]).to_pylist() == [1.5, None, 2.0, -300.0]


def test_an_empty_cell_in_the_first_data_row_is_not_a_header(tmp_path):
    _write(tmp_path / "t.csv", "a,b\n,2\n3,4\n")
    assert tables.read_table(tmp_path / "t.csv").column("a").to_pylist() == [None, 3]


def test_numeric_looking_header_is_a_header(tmp_path):
    _write(tmp_path / "t.csv", "2019,2020\n1,2\n")
    assert tables.read_table(tmp_path / "t.csv").column_names == ["2019", "2020"]


@pytest.mark.parametrize("token", ["", "NA", "null", "NaN"])
def test_missing_value_tokens_are_nulls(tmp_path, token):
    _write(tmp_path / "t.csv", f"a,b\n1,{token}\n2,x\n")
    assert tables.read_table(tmp_path / "t.csv").column("b").to_pylist() == [None, "x"]


def test_chunks_cover_the_file_exactly(tmp_path):
    n = 1000
    _write(tmp_path / "t.csv", "a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(n)))
    chunks = list(tables.iter_table(tmp_path / "t.csv", 64))
    assert [c.num_rows for c in chunks] == [64] * 15 + [40]
    assert sum((c.column("a").to_pylist() for c in chunks), []) == list(range(n))


def test_roles_kinds_and_vocabulary(tmp_path):
    t = pa.table({"ts": pa.array([0, 1, 2, 3], pa.timestamp("s")), "host": ["a", "b", "c", "d"],
                  "x": [1.0, 2.0, None, 4.0], "code": [1, 2, 1, 3], "ok": [True, False, True, True],
                  "proto": pa.array(["tcp", "udp", "tcp", "tcp"]).dictionary_encode(), "label": [0, 1, 0, 0]})
    roles = schema.infer_roles(t.schema, exclude="label", id_columns=["ts", "host"], categorical="code")
    spec = schema.build_schema(t, roles)
    assert [(f["name"], f["kind"]) for f in spec["features"]] == [
        ("x", "numeric"), ("code", "categorical"), ("ok", "categorical"), ("proto", "categorical")]
    assert spec["features"][1]["categories"] == ["1", "2", "3"]
    assert spec["features"][3]["categories"] == ["tcp", "udp"]
    assert schema.width(spec) == 1 + 4 + 3 + 3 and schema.categories(spec) == (3, 2, 2)


def test_a_time_column_is_never_silently_a_feature():
    t = pa.table({"ts": pa.array([0, 1], pa.timestamp("s")), "x": [1.0, 2.0]})
    with pytest.raises(InputValidationError, match=r"'ts' holds dates/times.*--id-columns ts.*--exclude ts"):
        schema.infer_roles(t.schema)


def test_text_with_too_many_values_is_not_a_category():
    t = pa.table({"user": [f"u{i}" for i in range(40)], "x": np.arange(40.0)})
    with pytest.raises(InputValidationError, match=r"'user' holds text with 40 distinct values.*--id-columns user"):
        schema.build_schema(t, schema.infer_roles(t.schema))


def test_unknown_and_doubled_roles_are_refused():
    t = pa.table({"a": [1.0], "b": [2.0]})
    with pytest.raises(InputValidationError, match="--exclude: X has no column 'c'"):
        schema.infer_roles(t.schema, exclude="c")
    with pytest.raises(InputValidationError, match="two roles"):
        schema.infer_roles(t.schema, exclude="a", id_columns="a")
    with pytest.raises(InputValidationError, match="no feature column left"):
        schema.infer_roles(t.schema, exclude="a,b")


def _spec():
    return {"features": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "numeric"},
                         {"name": "p", "kind": "categorical", "categories": ["tcp", "udp"]}],
            "id_columns": ["host"], "exclude": []}


def test_encoding_matches_columns_by_name_and_marks_unseen_and_missing():
    t = pa.table({"p": ["udp", "gre", None, "tcp"], "junk": [0, 0, 0, 0], "y": [1.0, 2.0, 3.0, 4.0],
                  "x": [5.0, 6.0, 7.0, 8.0], "host": ["a", "b", "c", "d"]})
    x = schema.encode(t, _spec(), allow_missing=True)
    np.testing.assert_array_equal(x[:, :2], [[5, 1], [6, 2], [7, 3], [8, 4]])
    np.testing.assert_array_equal(x[[0, 1, 3], 2:], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    assert np.isnan(x[2, 2:]).all()
    reordered = t.select(["host", "x", "y", "p"])
    np.testing.assert_array_equal(schema.encode(reordered, _spec(), allow_missing=True), x)
    with pytest.raises(InputValidationError, match=r"column 'p', data row 12, is empty"):
        schema.encode(t, _spec(), first_row=10)


def test_missing_column_and_text_in_a_numeric_column_are_named():
    t = pa.table({"x": ["1", "2", "oops"], "p": ["tcp"] * 3})
    with pytest.raises(InputValidationError, match=r"no column 'y'"):
        schema.encode(t, _spec())
    t = t.append_column("y", pa.array([1.0, 2.0, 3.0]))
    with pytest.raises(InputValidationError, match=r"column 'x', data row 2, holds 'oops'"):
        schema.encode(t, _spec())


def test_fit_reading_refuses_a_timestamp_and_takes_the_rest(tmp_path):
    _write(tmp_path / "t.csv", "time,host,x,proto\n2026-01-01 00:00:00,h1,1,tcp\n2026-01-01 00:01:00,h2,2,udp\n")
    with pytest.raises(InputValidationError, match="'time' holds dates/times"):
        read_fit_table(tmp_path / "t.csv")
    x, spec = read_fit_table(tmp_path / "t.csv", id_columns="time,host")
    assert schema.feature_names(spec) == ["x", "proto"] and x.shape == (2, 1 + 3)
