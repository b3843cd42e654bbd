"""Where a client of the gateway (tests, bench, chaos, command lines) finds its API key.

In order: ``REGIONSTORE_API_KEY``; else the file named by ``REGIONSTORE_API_KEY_FILE``; else
``$RUN_DIR/operator.key``, the operator key ``make up`` writes (``RUN_DIR`` defaults to the
repository's ``.run``, as in the Makefile).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository's run directory, when this package is used from its source tree.
DEFAULT_RUN_DIR = Path(__file__).resolve().parents[3] / ".run"


class MissingApiKeyError(RuntimeError):
    """No API key was given and the operator key file does not exist."""


class KeyFileError(MissingApiKeyError):
    """The key file in use cannot be read, or is empty."""


class ClientKeySettings(BaseSettings):
    """The variables a client reads its key from."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REGIONSTORE_API_KEY")
    )
    api_key_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("REGIONSTORE_API_KEY_FILE")
    )
    run_dir: Path = Field(default=DEFAULT_RUN_DIR, validation_alias=AliasChoices("RUN_DIR"))


def configured_key(settings: ClientKeySettings | None = None) -> str | None:
    """The key by the lookup order above; None when none is set and no operator key file exists.

    KeyFileError when the file in use cannot be read or is empty.
    """
    settings = settings or ClientKeySettings()
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return settings.api_key.get_secret_value().strip()
    if settings.api_key_file is not None:
        return _read_key(settings.api_key_file, "REGIONSTORE_API_KEY_FILE")
    default = settings.run_dir / "operator.key"
    return _read_key(default, "RUN_DIR") if default.is_file() else None


def api_key(settings: ClientKeySettings | None = None) -> str:
    """The key to call the gateway with; MissingApiKeyError when there is none."""
    settings = settings or ClientKeySettings()
    key = configured_key(settings)
    if key is None:
        raise MissingApiKeyError(
            "no API key: set REGIONSTORE_API_KEY or REGIONSTORE_API_KEY_FILE, or start the "
            f"stack (make up writes {settings.run_dir / 'operator.key'})"
        )
    return key


def _read_key(path: Path, source: str) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise KeyFileError(f"cannot read the API key file {path} ({source}): {reason}") from error
    if not key:
        raise KeyFileError(f"the API key file {path} ({source}) is empty")
    return key


def stack_secret(run_dir: Path) -> str:
    """The server secret of the local stack in ``run_dir``: the one its gateway issues and checks
    keys with (``secrets/auth_secret``, which ``make up`` writes)."""
    return (run_dir / "secrets" / "auth_secret").read_text(encoding="utf-8").strip()


def auth_headers(key: str | None = None) -> dict[str, str]:
    """The Authorization header of a request with this key (default: :func:`api_key`)."""
    return {"Authorization": f"Bearer {key if key is not None else api_key()}"}
