"""Database access: one cached pg8000 connection per thread, transactions, tenant scope."""

from chalicelib.db.connection import reset_connection, separate_transaction, transaction

__all__ = ["reset_connection", "separate_transaction", "transaction"]
