"""What this project asks of pg8000 beyond its defaults, installed on each connection it opens.

- **timestamptz in one call.** pg8000 decodes every timestamptz with ``strptime`` (about 14 µs
  each; a rebill batch reads thousands). The server writes them in ISO form (DateStyle ISO,
  whatever the session's time zone: ``+00``, ``+05:30``, ``-00:01:15``), which
  ``datetime.fromisoformat`` reads in well under a microsecond, to the same instant and offset.
  Whatever it does not read (``infinity``, BC dates, years past 9999) goes to pg8000's own
  decoder, so those come back exactly as before.
- **A parameterized statement in one round trip.** pg8000 sends Parse and waits, Describe and
  waits, then Bind and Execute and waits: three round trips per statement. libpq sends Parse,
  Bind, Describe (portal), Execute and Sync together and waits once; so does this. The messages
  are pg8000's own (text parameters whose types the server infers, text results), and an error
  anywhere makes the server skip to the Sync, as before; the parameters are encoded before
  anything is sent, so a value pg8000 cannot encode leaves the connection in step.
- **Prepared where a statement asks for it.** A statement whose text starts with ``/* prepared */``
  (the billing round's state load, its write and its payments' record; a usage request's
  statements, its key's claim and completion, in ``db/sql``) is parsed once per connection as a
  named statement and from then on only bound and executed: planning the write cost more than a
  tenth of a round, and planning was 0.3-1.4 ms of each of a usage request's statements (#17).
  The server keeps custom plans for the first executions and a generic one after only where it
  costs no more (``plan_cache_mode``), as for any PL/pgSQL function; those statements find every
  row by its key (``= ANY(ARRAY(...))``, lateral lookups), so a generic plan is mostly the same probe.
  The result is described on every execution, so its columns are
  always the plan's. A statement the server no longer has (26000: a pooler's DISCARD) or whose
  result changed shape under a migration (0A000) is parsed afresh the next time: it fails as
  ``errors.StalePreparedStatement``, which its transaction sends again at once when it was the
  first statement (``connection.Transaction``) and which is otherwise retryable as a deadlock is
  (the transaction rolled back whole; ``idempotency.in_tenant_scope`` retries it once).
  Not every statement is prepared: a generic plan is planned without its parameters' values, and
  one measured slower than planning afresh stays unnamed (``usage_caps.sql``'s ``stored``).

- **BEGIN and COMMIT in the same flush.** A transaction's BEGIN (with its tenant scope) is sent as a
  simple query in front of its first statement, and its COMMIT behind its last one when the caller
  says it is the last (``connection.Transaction``): the server runs them in order, and each part's
  answer is read in order, so an error in any part is raised once every answer is read (the
  connection stays in step). After a failed statement the COMMIT is a ROLLBACK.

``install`` is called once per connection (``connection.open_connection``); pg8000 is imported
here only when a connection is made.
"""

import types
from datetime import datetime

TIMESTAMPTZ = 1184  # pg_type oid


def install(conn) -> None:
    """Register the timestamptz decoder and the one-round-trip execution on a new pg8000 connection."""
    from pg8000 import converters

    fallback = converters.timestamptz_in

    def timestamptz_in(data: str):
        try:
            return datetime.fromisoformat(data)
        except ValueError:
            return fallback(data)

    conn.register_in_adapter(TIMESTAMPTZ, timestamptz_in)
    conn.execute_unnamed = types.MethodType(_execute_unnamed, conn)


PREPARED = "/* prepared */"
# A prepared statement the server lost (26000: a pooler's DISCARD) or whose result changed shape under
# a migration (0A000, "cached plan must not change result type"): parsed afresh next time.
STALE = ("26000", "0A000")


def _execute_unnamed(self, statement, vals=(), oids=(), stream=None):
    """pg8000's ``execute_unnamed`` in one round trip, under a name of its own when the statement asks
    to be prepared (COPY, with ``stream``, keeps pg8000's own)."""
    from pg8000 import core

    if stream is not None:
        return type(self).execute_unnamed(self, statement, vals, oids, stream)
    before, after = self.__dict__.pop("billing_pipeline", (None, None))
    params = core.make_params(self.py_types, vals)
    name, parse = core.NULL_BYTE, True
    if statement.startswith(PREPARED):
        prepared = self.__dict__.setdefault("billing_prepared", {})
        name, parse = prepared.get(statement), statement not in prepared
        if parse:  # a new name each time: one that failed after its Parse still exists on the server
            number = self.__dict__["billing_named"] = self.__dict__.get("billing_named", 0) + 1
            name = prepared[statement] = f"billing_{number}".encode("ascii") + core.NULL_BYTE
    context = core.Context(statement)
    if before is not None:
        self.send_QUERY(before)
    if parse:
        self._send_message(core.PARSE, _parse_message(core, name, statement.encode(self._client_encoding), oids))
    self._send_message(core.BIND, _bind_message(core, name, params, self._client_encoding))
    self._send_message(core.DESCRIBE, core.PORTAL + core.NULL_BYTE)
    core._write(self._sock, core.EXECUTE_MSG)
    core._write(self._sock, core.SYNC_MSG)
    if after is not None:
        self.send_QUERY(after)
    core._flush(self._sock)
    failures = _answers(self, core, before)
    try:
        self.handle_messages(context)
    except core.DatabaseError as exc:
        code = exc.args[0].get("C") if exc.args and isinstance(exc.args[0], dict) else None
        if name != core.NULL_BYTE and (parse or code in STALE):
            self.__dict__["billing_prepared"].pop(statement, None)  # parsed again, under a new name, next time
            exc.billing_stale = not parse  # errors.translate: StalePreparedStatement, to be sent again
        failures.append(exc)
    if failures and after is not None:
        after = "ROLLBACK"  # a COMMIT behind a failed statement ends the transaction as one, and says so
    failures += _answers(self, core, after)
    if failures:
        raise failures[0]
    return context


def _answers(conn, core, query: str | None) -> list:
    """Read a pipelined simple query's answers up to its ReadyForQuery: its error, if it failed."""
    if query is None:
        return []
    try:
        conn.handle_messages(core.Context(query))
    except core.DatabaseError as exc:
        return [exc]
    return []


def _parse_message(core, name: bytes, statement: bytes, oids) -> bytes:
    """Parse into statement ``name``: parameter types as given (none: the server infers them)."""
    message = bytearray(name + statement + core.NULL_BYTE + core.H_pack(len(oids)))
    for oid in oids:
        message += core.i_pack(0 if oid == -1 else oid)
    return bytes(message)


def _bind_message(core, name: bytes, params, encoding: str) -> bytes:
    """Bind the unnamed portal to statement ``name``: text parameters, text results."""
    message = bytearray(core.NULL_BYTE + name + core.H_pack(0) + core.H_pack(len(params)))
    for value in params:
        if value is None:
            message += core.i_pack(-1)
        else:
            encoded = value.encode(encoding)
            message += core.i_pack(len(encoded)) + encoded
    message += core.H_pack(0)
    return bytes(message)
