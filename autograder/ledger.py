"""The ledger: what was graded, from which file, by which grader, and who grades what now.

One table, ``dlbb_ledger``, in the gradebook's own database. Each (student,
assignment) handed in with a readable notebook is a row, keyed ``student/assignment``.
A row without an outcome is work to do: a grader *claims* it (``claim``), keeps
it by renewing a lease while it grades (``renew``), and records the outcome
(``finish``). On PostgreSQL a claim is ``SELECT … FOR UPDATE SKIP LOCKED``, so any
number of graders on any number of hosts share one class; a grader that dies
stops renewing, and once its lease has expired another takes its work over. On
SQLite (one host) the same statements simply run one at a time.

What changes the set of work (releasing, enqueueing, dropping what could not be
graded) runs under the class lock (``locked``): a PostgreSQL advisory lock, or a
lock file beside a SQLite gradebook.
"""
import fcntl
import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from nbgrader.api import Gradebook

TABLE = sa.Table(
    "dlbb_ledger", sa.MetaData(),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("grader", sa.String(64), nullable=False),  # hash of what decides the grades
    sa.Column("notebook", sa.String(64), nullable=False),  # hash of the file graded
    sa.Column("outcome", sa.Text),  # JSON; NULL while the row waits to be graded
    sa.Column("graded", sa.Boolean),  # the outcome is a score (not a failure)
    sa.Column("owner", sa.String(256)),  # the grader holding the claim
    sa.Column("lease_until", sa.Float),  # epoch seconds
    sa.Column("graded_by", sa.String(256)),
)
LOCK_ID = 0x646C6262  # "dlbb": the advisory lock's key


class Ledger:
    """The ledger in the gradebook at ``db_url``; ``lease``: seconds a claim lasts unrenewed."""

    def __init__(self, db_url: str, lease: float = 30.0):
        options = {"connect_args": {"timeout": 60}} if db_url.startswith("sqlite") else {}
        self.engine = sa.create_engine(db_url, **options)
        self.lease = lease
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        with self.locked():  # graders starting at once would each create the schema
            with Gradebook(db_url):  # nbgrader's first: it stamps only a database it created
                pass
            TABLE.create(self.engine, checkfirst=True)

    @contextmanager
    def locked(self):
        """Hold the class lock: one grader at a time changes what there is to grade."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                connection.execute(sa.select(sa.func.pg_advisory_lock(LOCK_ID)))
                try:
                    yield
                finally:
                    connection.execute(sa.select(sa.func.pg_advisory_unlock(LOCK_ID)))
        else:
            with open(Path(self.engine.url.database).with_suffix(".lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
                yield

    def enqueue(self, work: dict[str, tuple[str, str]], kept: set[str]) -> None:
        """Make every key of ``work`` ask to be graded from its (grader, notebook) hashes,
        unless its row already has an outcome for exactly those. Between batches (no row
        waiting or claimed), a row whose outcome is a failure, or a score the gradebook no
        longer keeps (its key not in ``kept``), asks to be graded again. Hold ``locked``."""
        with self.engine.begin() as connection:
            between = connection.execute(
                sa.select(sa.func.count()).where(TABLE.c.outcome.is_(None))).scalar() == 0
            rows = {row.key: row for row in connection.execute(sa.select(TABLE))}
            for key, (grader, notebook) in work.items():
                row = rows.get(key)
                fresh = dict(grader=grader, notebook=notebook, outcome=None, graded=None,
                             owner=None, lease_until=None, graded_by=None)
                if row is None:
                    connection.execute(sa.insert(TABLE).values(key=key, **fresh))
                elif ((row.grader, row.notebook) != (grader, notebook) or between and (
                        row.outcome is not None and not (row.graded and key in kept))):
                    connection.execute(sa.update(TABLE).where(TABLE.c.key == key).values(fresh))

    def claim(self, keys: list[str]) -> str | None:
        """Claim one of ``keys`` that waits to be graded and is free or whose lease expired."""
        now = time.time()
        free = (sa.select(TABLE.c.key)
                .where(TABLE.c.key.in_(keys), TABLE.c.outcome.is_(None),
                       sa.or_(TABLE.c.lease_until.is_(None), TABLE.c.lease_until < now))
                .order_by(TABLE.c.key).limit(1).with_for_update(skip_locked=True))
        with self.engine.begin() as connection:
            return connection.execute(
                sa.update(TABLE).where(TABLE.c.key == free.scalar_subquery())
                .values(owner=self.owner, lease_until=now + self.lease)
                .returning(TABLE.c.key)).scalar()

    def renew(self, keys: list[str]) -> None:
        if keys:
            with self.engine.begin() as connection:
                connection.execute(sa.update(TABLE).where(
                    TABLE.c.key.in_(keys), TABLE.c.owner == self.owner,
                    TABLE.c.outcome.is_(None)).values(lease_until=time.time() + self.lease))

    def finish(self, key: str, outcome: dict, graded: bool) -> bool:
        """Record the outcome of a claimed key; False if the claim was lost (nothing written)."""
        with self.engine.begin() as connection:
            return connection.execute(sa.update(TABLE).where(
                TABLE.c.key == key, TABLE.c.owner == self.owner, TABLE.c.outcome.is_(None)).values(
                outcome=json.dumps(outcome), graded=graded, owner=None, lease_until=None,
                graded_by=self.owner)).rowcount == 1

    def release(self) -> None:
        """Give up this grader's claims (it is stopping): others need not wait for the lease."""
        with self.engine.begin() as connection:
            connection.execute(sa.update(TABLE).where(
                TABLE.c.owner == self.owner, TABLE.c.outcome.is_(None)).values(
                owner=None, lease_until=None))

    def waiting(self, keys: list[str]) -> int:
        """How many of ``keys`` have no outcome yet."""
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).where(
                TABLE.c.key.in_(keys), TABLE.c.outcome.is_(None))).scalar()

    def outcomes(self, keys: list[str] | None = None) -> dict[str, dict]:
        """The recorded outcome of each key that has one (of every key when None)."""
        query = sa.select(TABLE.c.key, TABLE.c.outcome).where(TABLE.c.outcome.is_not(None))
        if keys is not None:
            query = query.where(TABLE.c.key.in_(keys))
        with self.engine.connect() as connection:
            return {key: json.loads(outcome) for key, outcome in connection.execute(query)}

    def forget(self, keys: list[str]) -> None:
        if keys:
            with self.engine.begin() as connection:
                connection.execute(sa.delete(TABLE).where(TABLE.c.key.in_(keys)))

    def close(self) -> None:
        self.engine.dispose()
