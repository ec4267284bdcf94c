"""Counting the app's round trips to the database (benches and tests; never shipped).

A round trip is a flush of a pg8000 connection's socket file: the driver then waits for the
server's answer. Counted, never timed, so a figure holds on a noisy machine.
"""


class CountingSocket:
    """A pg8000 connection's socket file that counts flushes (round trips)."""

    def __init__(self, sock, counter: list):
        self._sock = sock
        self._counter = counter

    def flush(self):
        self._counter[0] += 1
        return self._sock.flush()

    def __getattr__(self, name):
        return getattr(self._sock, name)


def counted_opener(open_connection, counter: list):
    """``open_connection`` whose connections count their round trips into ``counter`` ([n])."""

    def open_counted(*args, **kwargs):
        conn = open_connection(*args, **kwargs)
        conn._sock = CountingSocket(conn._sock, counter)
        return conn

    return open_counted
