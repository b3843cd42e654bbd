"""Where the gateway is and which API key to send, from ``REGIONSTORE_*`` and ``RUN_DIR``.

The key is looked up in order: ``REGIONSTORE_API_KEY``, else the file named by
``REGIONSTORE_API_KEY_FILE``, else ``$RUN_DIR/operator.key`` (the key ``make up`` writes; RUN_DIR
defaults to the repository's ``.run``) when that file exists. No key at all is not an error here:
a gateway that needs one answers 401, and the command says so.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000"
# tools/src/regionstore_tools/settings.py -> the repository root, for an install from the
# workspace (uv sync installs members editable); elsewhere the file simply is not found.
REPO_ROOT = Path(__file__).resolve().parents[3]
OPERATOR_KEY_FILE = "operator.key"


class KeyFileError(Exception):
    """The key file the settings name cannot be read, or is empty."""


class ToolSettings(BaseSettings):
    """What the command line reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="REGIONSTORE_", extra="ignore")

    gateway_url: str = DEFAULT_GATEWAY_URL
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    run_dir: Path = Field(default=REPO_ROOT / ".run", validation_alias="RUN_DIR")

    def key(self) -> str | None:
        """The API key to send, by the lookup order above; None when there is none."""
        if self.api_key is not None and self.api_key.get_secret_value().strip():
            return self.api_key.get_secret_value().strip()
        if self.api_key_file is not None:
            return _read_key(self.api_key_file, "REGIONSTORE_API_KEY_FILE")
        default = self.run_dir / OPERATOR_KEY_FILE
        return _read_key(default, "RUN_DIR") if default.is_file() else None


def _read_key(path: Path, source: str) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise KeyFileError(f"cannot read the API key file {path} ({source}): {reason}") from error
    if not key:
        raise KeyFileError(f"the API key file {path} ({source}) is empty")
    return key
