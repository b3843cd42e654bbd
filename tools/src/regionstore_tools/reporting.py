"""How a command fails: one line on stderr and an exit status, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError

from regionstore_shared.api_key import KeyFileError
from regionstore_tools.gateway import ToolError


@contextmanager
def reported() -> Iterator[None]:
    """Turn a ToolError (and bad settings, key files, Kafka or Redis failures) into one line on
    stderr and its exit status."""
    try:
        yield
    except ToolError as error:
        _fail(str(error), error.exit_code)
    except KeyFileError as error:
        _fail(str(error), 1)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        _fail(f"invalid setting {where}: {first['msg']}", 1)
    except KafkaError as error:
        _fail(f"Kafka did not answer: {_describe(error)}", 1)
    except RedisError as error:
        _fail(f"Redis did not answer: {_describe(error)}", 1)


def _fail(message: str, exit_code: int) -> NoReturn:
    typer.echo(f"error: {ToolError(message)}", err=True)
    raise typer.Exit(exit_code) from None


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
