"""With tracing on, units of work show up as X-Ray subsegments."""


def test_tracing_on_records_a_subsegment_per_database_transaction(monkeypatch, make_tenant):
    from aws_xray_sdk.core import xray_recorder

    from chalicelib import tracing
    from chalicelib.db import transaction

    tenant = make_tenant()
    monkeypatch.setenv("TRACING", "true")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    sent = []
    monkeypatch.setattr(xray_recorder, "_send_segment", lambda: sent.append(xray_recorder.current_segment()))
    tracing._xray()
    xray_recorder.begin_segment("test")
    try:
        with transaction(tenant_id=tenant) as tx:
            tx.scalar("SELECT 1")
        names = [sub.name for sub in xray_recorder.current_segment().subsegments]
    finally:
        xray_recorder.end_segment()
        # _send_segment (replaced above) is what clears the thread's entities: without this the ended
        # segment stays current, and every later boto3 call in this process (botocore is patched for
        # good) fails with AlreadyEndedException.
        xray_recorder.clear_trace_entities()
    assert "postgres.transaction" in names
