"""Feeds served from a PostgreSQL store: what a replica answers while that store cannot be read."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.conftest import POSTGRES_SERVER, fresh_postgres_database
from tests.service_helpers import Service, copy_examples, free_port, write_config


def test_a_feed_is_unavailable_not_gone_while_the_database_cannot_be_reached(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    with fresh_postgres_database() as database:
        name = database.rsplit("/", 1)[1]
        port = free_port()
        config = write_config(tmp_path, port=port, database=database)
        with Service(config, port) as service:
            service.wait_listening()
            service.wait_healthy()
            served = service.get("/feeds/all.atom")
            assert served.status_code == 200 and b"<feed" in served.content
            with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                try:
                    away = service.get("/feeds/all.atom")
                    # 404 would tell feed readers the feed is gone; 503 asks them to come back.
                    assert away.status_code == 503 and away.headers["retry-after"] == "30"
                    assert service.get("/feeds/topics/nothing-like-it.atom").status_code == 503
                finally:
                    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            back = service.get("/feeds/all.atom")
            assert back.status_code == 200 and back.content == served.content
            assert back.headers["etag"] == served.headers["etag"]
