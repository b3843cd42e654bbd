"""The Olist customers CSV (``olist_customers_dataset.csv``): read it as a stream, write it.

Olist's file starts with a quoted header and stores the zip prefix as a number without leading
zeros (SP's 01310 is ``1310``)::

    "customer_id","customer_unique_id","customer_zip_code_prefix","customer_city","customer_state"
    06b8999e2fba1a1fbc88172c00ba8bc7,861eff4711a542e4b93843c6dd7febb0,14409,franca,SP
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import TextIO

from regionstore_shared.schemas import Customer
from regionstore_tools.dataset.loader import Rejection, Row

COLUMNS: tuple[str, ...] = (
    "customer_id",
    "customer_unique_id",
    "customer_zip_code_prefix",
    "customer_city",
    "customer_state",
)
_ZIP = "customer_zip_code_prefix"


class CsvFormatError(ValueError):
    """The file is not an Olist customers CSV at all (no header, missing columns, not UTF-8)."""


def read_customers(stream: TextIO, *, name: str = "<csv>") -> Iterator[Row | Rejection]:
    """Rows of an Olist customers CSV, one at a time, numbered by line (the header is line 1).

    The header is checked before this returns, so a file that is not an Olist CSV fails at once
    with ``CsvFormatError``. A row whose zip is not a number, or that has the wrong number of
    fields, becomes a ``Rejection``; everything else is the gateway's to judge.
    """
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFormatError(f"{name}: empty file, expected the header {_header()}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise CsvFormatError(f"{name}: unreadable header: {error}") from error
    # A byte order mark before a quoted name leaves the quotes in: '\ufeff"customer_id"'.
    header = [column.lstrip("\ufeff").strip().strip('"') for column in header]
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise CsvFormatError(
            f"{name}: missing column(s) {', '.join(missing)}; the header must name {_header()}"
        )
    positions = [header.index(column) for column in COLUMNS]
    width = len(header)

    def rows() -> Iterator[Row | Rejection]:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as error:
                raise CsvFormatError(
                    f"{name}: unreadable after line {reader.line_num}: {error}"
                ) from error
            if not fields:
                continue
            if len(fields) != width:
                yield Rejection(
                    reader.line_num, f"row: {len(fields)} fields where the header has {width}"
                )
                continue
            yield _row(reader.line_num, [fields[i] for i in positions])

    return rows()


def _row(line: int, values: list[str]) -> Row | Rejection:
    customer = dict(zip(COLUMNS, values, strict=True))
    raw_zip = customer[_ZIP].strip()
    if not (raw_zip.isascii() and raw_zip.isdigit()):
        return Rejection(line, f"{_ZIP}: {raw_zip!r} is not a number", customer["customer_id"])
    return Row(line, {**customer, _ZIP: int(raw_zip)})


def write_customers(customers: Iterable[Customer], stream: TextIO) -> int:
    """Write ``customers`` in Olist's format; returns how many were written."""
    stream.write(_header() + "\n")
    writer = csv.writer(stream, lineterminator="\n")
    count = 0
    for customer in customers:
        writer.writerow(
            [
                customer.customer_id,
                customer.customer_unique_id,
                customer.customer_zip_code_prefix,
                customer.customer_city,
                customer.customer_state,
            ]
        )
        count += 1
    return count


def count_rows(stream: Iterable[bytes]) -> int:
    """Data rows in a CSV, counted fast for a progress bar (assumes one line per row)."""
    return max(sum(chunk.count(b"\n") for chunk in stream) - 1, 0)


def _header() -> str:
    return ",".join(f'"{column}"' for column in COLUMNS)
