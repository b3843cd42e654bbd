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


def api_key(settings: ClientKeySettings | None = None) -> str:
    """The key to call the gateway with; MissingApiKeyError when there is none."""
    settings = settings or ClientKeySettings()
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return settings.api_key.get_secret_value().strip()
    path = settings.api_key_file or settings.run_dir / "operator.key"
    try:
        key = path.read_text().strip()
    except OSError as error:
        raise MissingApiKeyError(
            f"no API key: set REGIONSTORE_API_KEY or REGIONSTORE_API_KEY_FILE, or start the "
            f"stack (make up writes {path}): {error}"
        ) from error
    if not key:
        raise MissingApiKeyError(f"{path} is empty")
    return key


def auth_headers(key: str | None = None) -> dict[str, str]:
    """The Authorization header of a request with this key (default: :func:`api_key`)."""
    return {"Authorization": f"Bearer {key if key is not None else api_key()}"}
