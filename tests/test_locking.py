import pytest

from patchunet.errors import PatchUNetError
from patchunet.locking import storage_lock


def test_an_unreachable_postgresql_is_one_line_without_its_password() -> None:
    url = "postgresql+psycopg2://tuner:secret@127.0.0.1:9/optuna"
    with pytest.raises(PatchUNetError, match="cannot connect to PostgreSQL") as raised, storage_lock(url, "study"):
        pass
    assert "secret" not in str(raised.value) and "\n" not in str(raised.value)
