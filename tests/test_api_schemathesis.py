"""schemathesis against the served OpenAPI description: generated requests never get a server error.

The app runs in process (ASGI) on a fresh PostgreSQL database with a project, a source with
comments and a dataset, and every request carries an administrator's token, so generated
requests reach the handlers rather than stopping at authentication.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from api_helpers import Api
from hypothesis import HealthCheck, given, settings

from commine.persistence.engine import make_engine, migrate
from commine.persistence.store import EventStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from conftest import PG_SERVER, require_services

    from commine.persistence.engine import drop_database, ensure_database

    require_services()
    url = f"{PG_SERVER}/commine_test_schemathesis_{tmp_path_factory.getbasetemp().name[-8:].replace('-', '_')}"
    ensure_database(url)
    engine = make_engine(url)
    migrate(engine)
    api = Api(EventStore(engine))
    api.setup_source_and_dataset()
    try:
        yield api
    finally:
        engine.dispose()
        drop_database(url)


def test_no_server_errors(served: Api) -> None:
    """Each operation of the served description, with generated path, query and body, answers below 500."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.client.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    seen: dict[int, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers=served.admin)
            seen[response.status_code // 100] = seen.get(response.status_code // 100, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
            body = response.json()
            assert body["status"] == ("ok" if response.status_code < 300 else "error"), response.text

        check()
    # Generated requests got past validation to the handlers, not only 4xx at the door.
    assert seen.get(2, 0) > 0 and seen.get(4, 0) > 0 and 5 not in seen
