"""An endpoint's delivery lane: one worker at a time, and a worker whose lease ran out lets go of it."""

from chalicelib import webhook_endpoints
from chalicelib.billing import calendar
from chalicelib.db import transaction


def _endpoint(tenant_id: str) -> str:
    with transaction(tenant_id=tenant_id) as tx:
        fields = webhook_endpoints.EndpointFields(url="https://hooks.example.com/a", enabled_events=("*",))
        return webhook_endpoints.create(tx, fields)["id"]


def _claim(tenant_id: str, endpoint_id: str):
    with transaction(tenant_id=tenant_id) as tx:
        return webhook_endpoints.claim_lane(tx, endpoint_id, 30, calendar.utcnow())


def test_a_held_lane_is_nobody_elses_until_released(make_tenant):
    tenant = make_tenant()
    endpoint = _endpoint(tenant)

    first, second = _claim(tenant, endpoint), _claim(tenant, endpoint)
    with transaction(tenant_id=tenant) as tx:
        webhook_endpoints.release_lane(tx, first)
    third = _claim(tenant, endpoint)

    assert first is not None and second is None and third is not None and third.token != first.token


def test_a_worker_whose_lease_ran_out_can_neither_renew_nor_release_the_next_ones(make_tenant, owner_conn):
    tenant = make_tenant()
    endpoint = _endpoint(tenant)
    stale = _claim(tenant, endpoint)
    owner_conn.run("UPDATE webhook_endpoints SET lease_until = now() - interval '1 second' WHERE id = :id", id=endpoint)
    taken_over = _claim(tenant, endpoint)

    with transaction(tenant_id=tenant) as tx:
        renewed = webhook_endpoints.renew_lane(tx, stale, 30)
        webhook_endpoints.release_lane(tx, stale)
    still_held = _claim(tenant, endpoint)
    with transaction(tenant_id=tenant) as tx:
        current = webhook_endpoints.renew_lane(tx, taken_over, 30)

    assert taken_over is not None and renewed is False and still_held is None and current is True


def test_a_disabled_endpoint_has_no_lane(make_tenant, owner_conn):
    tenant = make_tenant()
    endpoint = _endpoint(tenant)
    held = _claim(tenant, endpoint)
    owner_conn.run("UPDATE webhook_endpoints SET enabled = false WHERE id = :id", id=endpoint)

    with transaction(tenant_id=tenant) as tx:
        assert webhook_endpoints.renew_lane(tx, held, 30) is False
    assert _claim(tenant, endpoint) is None


def test_an_event_no_endpoint_wants_is_acknowledged_without_asking_sqs_anything(make_tenant, aws):
    from chalicelib import outbox, webhook_delivery

    tenant = make_tenant()
    _endpoint(make_tenant())  # another tenant's endpoint wants every type
    with transaction(tenant_id=tenant) as tx:
        event_id = outbox.add(tx, "usage.rejected", {"rejected": 1}, {"object": "usage_rejection"})

    # moto has no webhook-deliveries queue here: any SQS call would raise QueueDoesNotExist
    assert webhook_delivery.fan_out({"tenantId": tenant, "eventId": event_id, "eventType": "usage.rejected"}) is False
