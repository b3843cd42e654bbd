"""Reading and writing the Olist customers CSV, from in-memory text."""

from __future__ import annotations

import io

import pytest

from regionstore_tools.dataset.loader import Rejection, Row
from regionstore_tools.dataset.olist import generate
from regionstore_tools.dataset.olist_csv import (
    CsvFormatError,
    count_rows,
    read_customers,
    write_customers,
)

HEADER = (
    '"customer_id","customer_unique_id","customer_zip_code_prefix","customer_city",'
    '"customer_state"\n'
)
FRANCA = "06b8999e2fba1a1fbc88172c00ba8bc7,861eff4711a542e4b93843c6dd7febb0,14409,franca,SP\n"


def read(text: str) -> list[Row | Rejection]:
    return list(read_customers(io.StringIO(text), name="customers.csv"))


class TestReadCustomers:
    def test_good_rows_numbered_by_line(self) -> None:
        text = HEADER + FRANCA + '"id2","4c93744516667ad3b8f1fb645a3116a4",1151,"sao paulo","SP"\n'
        first, second = read(text)
        assert first == Row(
            2,
            {
                "customer_id": "06b8999e2fba1a1fbc88172c00ba8bc7",
                "customer_unique_id": "861eff4711a542e4b93843c6dd7febb0",
                "customer_zip_code_prefix": 14409,
                "customer_city": "franca",
                "customer_state": "SP",
            },
        )
        assert isinstance(second, Row)
        assert second.number == 3
        assert second.customer["customer_zip_code_prefix"] == 1151

    def test_leading_zeros_and_spaces_are_fine(self) -> None:
        (row,) = read(HEADER + "a,861eff4711a542e4b93843c6dd7febb0, 01310 ,sao paulo,SP\n")
        assert isinstance(row, Row)
        assert row.customer["customer_zip_code_prefix"] == 1310

    @pytest.mark.parametrize("bad_zip", ["abc", "", "12.5", "-500", "\uff11\uff12\uff13\uff14"])
    def test_bad_zip_is_a_rejection_with_its_line(self, bad_zip: str) -> None:
        rows = read(HEADER + FRANCA + f"bad1,861eff4711a542e4b93843c6dd7febb0,{bad_zip},x,SP\n")
        assert isinstance(rows[0], Row)
        assert rows[1] == Rejection(
            3, f"customer_zip_code_prefix: {bad_zip!r} is not a number", "bad1"
        )

    def test_out_of_range_zip_is_left_to_the_gateway(self) -> None:
        (row,) = read(HEADER + "a,861eff4711a542e4b93843c6dd7febb0,500,x,SP\n")
        assert isinstance(row, Row)
        assert row.customer["customer_zip_code_prefix"] == 500

    def test_wrong_field_count_is_a_rejection(self) -> None:
        rows = read(HEADER + "a,b,1000\n" + FRANCA)
        assert rows[0] == Rejection(2, "row: 3 fields where the header has 5")
        assert isinstance(rows[1], Row)

    def test_blank_lines_are_skipped(self) -> None:
        rows = read(HEADER + "\n" + FRANCA + "\n")
        assert [r.number for r in rows] == [3]

    def test_columns_in_any_order_and_extra_columns(self) -> None:
        text = (
            "customer_state,customer_city,note,customer_zip_code_prefix,"
            "customer_unique_id,customer_id\nSP,franca,hi,14409,u,c\n"
        )
        (row,) = read(text)
        assert isinstance(row, Row)
        assert row.customer == {
            "customer_id": "c",
            "customer_unique_id": "u",
            "customer_zip_code_prefix": 14409,
            "customer_city": "franca",
            "customer_state": "SP",
        }

    def test_byte_order_mark_in_header(self) -> None:
        (row,) = read("\ufeff" + HEADER + FRANCA)
        assert isinstance(row, Row)

    def test_missing_column_fails_at_once(self) -> None:
        text = '"customer_id","customer_unique_id","customer_zip_code_prefix","customer_city"\n'
        with pytest.raises(
            CsvFormatError, match=r"customers\.csv: missing column\(s\) customer_state"
        ):
            read_customers(io.StringIO(text + "a,b,1000,c\n"), name="customers.csv")

    def test_empty_file(self) -> None:
        with pytest.raises(CsvFormatError, match="empty file"):
            read("")

    def test_rows_are_read_lazily(self) -> None:
        stream = io.StringIO(HEADER + FRANCA * 3)
        rows = read_customers(stream)
        next(rows)
        assert stream.tell() < len(stream.getvalue())


class TestWriteCustomers:
    def test_olist_header_and_plain_rows(self) -> None:
        stream = io.StringIO()
        (customer,) = generate(1, seed=1)
        assert write_customers([customer], stream) == 1
        header, line, end = stream.getvalue().split("\n")
        assert header + "\n" == HEADER
        assert line.split(",")[2] == str(customer.customer_zip_code_prefix)
        assert end == ""

    def test_round_trip(self) -> None:
        customers = list(generate(500, seed=4))
        stream = io.StringIO()
        write_customers(customers, stream)
        stream.seek(0)
        rows = list(read_customers(stream))
        assert [r.customer for r in rows if isinstance(r, Row)] == [
            c.model_dump() for c in customers
        ]

    def test_city_with_a_comma_is_quoted(self) -> None:
        (customer,) = generate(1, seed=1)
        odd = customer.model_copy(update={"customer_city": 'a, "b"'})
        stream = io.StringIO()
        write_customers([odd], stream)
        stream.seek(0)
        (row,) = read_customers(stream)
        assert isinstance(row, Row)
        assert row.customer["customer_city"] == 'a, "b"'


class TestCountRows:
    def test_counts_data_rows(self) -> None:
        assert count_rows(io.BytesIO((HEADER + FRANCA * 3).encode())) == 3
        assert count_rows(io.BytesIO(b"")) == 0
