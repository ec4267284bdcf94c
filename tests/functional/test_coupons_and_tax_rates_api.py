"""Tax rates, coupons and discounts over the API: shapes, field errors, 422 codes, and tenants kept apart."""

from tests import billing

VAT = {"display_name": "VAT", "percentage": "19", "inclusive": True, "jurisdiction": "DE", "country": "DE"}


def test_a_tax_rate_is_made_read_listed_and_renamed_but_its_percentage_never_changes(api, tenant):
    made = api.post("/v1/tax_rates", {**VAT, "percentage": "7.2500"}, tenant.admin)

    assert made.status == 201, made.body
    rate = made.body
    assert (rate["object"], rate["percentage"], rate["inclusive"], rate["active"]) == ("tax_rate", "7.25", True, True)
    assert api.get(f"/v1/tax_rates/{rate['id']}", tenant.user).body == rate
    assert [r["id"] for r in api.get("/v1/tax_rates", tenant.user).body["data"]] == [rate["id"]]
    changed = api.post(f"/v1/tax_rates/{rate['id']}", {"display_name": "MwSt", "active": False}, tenant.admin)
    assert (changed.body["display_name"], changed.body["active"], changed.body["percentage"]) == ("MwSt", False, "7.25")
    refused = api.post(f"/v1/tax_rates/{rate['id']}", {"percentage": "20"}, tenant.admin)
    assert refused.status == 400
    assert refused.body["error"]["details"][0]["field"] == "percentage"
    assert api.get("/v1/tax_rates?active=true", tenant.user).body["data"] == []


def test_a_rate_in_basis_points_is_stored_as_the_same_exact_percentage(api, tenant):
    made = api.post("/v1/tax_rates", {"display_name": "GST", "basis_points": 825, "inclusive": False}, tenant.admin)

    assert made.status == 201
    assert made.body["percentage"] == "8.25"


def test_a_bad_tax_rate_is_a_400_naming_its_field_and_stores_nothing(api, tenant, owner_conn):
    before = billing.snapshot(owner_conn, tenant.id)
    cases = (
        ({**VAT, "percentage": "19.12345"}, "percentage"),
        ({**VAT, "percentage": "101"}, "percentage"),
        ({**VAT, "percentage": 19}, "percentage"),
        ({**VAT, "basis_points": 1900}, "percentage"),
        ({**VAT, "country": "Germany"}, "country"),
        ({"display_name": "VAT", "percentage": "19"}, "inclusive"),
    )
    for body, field in cases:
        reply = api.post("/v1/tax_rates", body, tenant.admin)
        assert reply.status == 400, body
        assert reply.body["error"]["details"][0]["field"] == field
    assert billing.snapshot(owner_conn, tenant.id) == before


def test_defaults_name_only_the_tenants_own_rates(api, catalog, other_tenant):
    theirs = api.post("/v1/tax_rates", VAT, other_tenant.admin).body["id"]
    ours = api.post("/v1/tax_rates", VAT, catalog.admin).body["id"]
    account = {"email": "t@customer.test", "name": "T", "currency": "USD", "default_tax_rates": [ours, theirs]}

    reply = api.post("/v1/accounts", account, catalog.user)

    assert reply.status == 400
    assert reply.body["error"]["details"] == [{"field": "default_tax_rates.1", "issue": "no such tax rate"}]
    twice = api.post("/v1/accounts", {**account, "default_tax_rates": [ours, ours]}, catalog.user)
    assert twice.body["error"]["details"] == [{"field": "default_tax_rates.1", "issue": "named twice"}]
    made = api.post("/v1/accounts", {**account, "default_tax_rates": [ours]}, catalog.user)
    assert made.body["default_tax_rates"] == [ours]
    cleared = api.post(f"/v1/accounts/{made.body['id']}", {"default_tax_rates": []}, catalog.user)
    assert cleared.body["default_tax_rates"] == []
    plan = {"code": "vat", "name": "V", "interval": "month", "amount": 1000, "currency": "USD", "tax_rates": [theirs]}
    assert api.post("/v1/plans", plan, catalog.admin).body["error"]["details"][0]["field"] == "tax_rates.0"
    assert api.get(f"/v1/tax_rates/{theirs}", catalog.user).status == 404


def test_a_coupon_is_made_listed_and_deactivated(api, tenant):
    body = {"name": "Launch", "percent_off": "20", "duration": "repeating", "duration_in_periods": 3}

    made = api.post("/v1/coupons", {**body, "applies_to": {"plans": ["pro"]}, "max_redemptions": 2}, tenant.admin)

    assert made.status == 201, made.body
    coupon = made.body
    assert (coupon["percent_off"], coupon["amount_off"], coupon["times_redeemed"], coupon["valid"]) == (
        "20",
        None,
        0,
        True,
    )
    assert coupon["applies_to"] == {"plans": ["pro"]}
    assert [c["id"] for c in api.get("/v1/coupons", tenant.user).body["data"]] == [coupon["id"]]
    off = api.post(f"/v1/coupons/{coupon['id']}", {"active": False}, tenant.admin)
    assert (off.body["active"], off.body["valid"]) == (False, False)


def test_a_bad_coupon_is_a_400_naming_its_fields(api, tenant):
    cases = (
        ({"duration": "once"}, ["percent_off"]),
        ({"duration": "once", "percent_off": "10", "amount_off": 100, "currency": "USD"}, ["percent_off"]),
        ({"duration": "once", "amount_off": 100}, ["currency"]),
        ({"duration": "repeating", "percent_off": "10"}, ["duration_in_periods"]),
        ({"duration": "forever", "percent_off": "0"}, ["percent_off"]),
        ({"duration": "once", "percent_off": "10", "redeem_by": "2001-01-01T00:00:00Z"}, ["redeem_by"]),
        ({"duration": "weekly", "percent_off": "10"}, ["duration"]),
    )
    for body, fields in cases:
        reply = api.post("/v1/coupons", body, tenant.admin)
        assert reply.status == 400, body
        assert [d["field"] for d in reply.body["error"]["details"]] == fields, body


def test_a_coupon_applied_to_an_account_and_a_subscription_makes_a_discount_each(api, catalog, account):
    coupon = api.post("/v1/coupons", {"percent_off": "10", "duration": "forever"}, catalog.admin).body
    sub = api.post("/v1/subscriptions", {"account_id": account["id"], "plan": "pro"}, catalog.user).body

    on_account = api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": coupon["id"]}, catalog.user)
    on_sub = api.post(f"/v1/subscriptions/{sub['id']}/discounts", {"coupon": coupon["id"]}, catalog.user)

    assert on_account.status == on_sub.status == 201, on_sub.body
    assert (on_account.body["subscription_id"], on_account.body["status"]) == (None, "active")
    assert on_sub.body["subscription_id"] == sub["id"]
    assert on_sub.body["coupon"]["times_redeemed"] == 2
    removed = api.call("DELETE", f"/v1/subscriptions/{sub['id']}/discounts", token=catalog.user)
    assert (removed.status, removed.body["status"]) == (200, "removed")
    again = api.call("DELETE", f"/v1/subscriptions/{sub['id']}/discounts", token=catalog.user)
    assert (again.status, again.body["error"]["code"]) == (422, "no_discount")


def test_a_coupon_that_may_not_be_redeemed_is_a_422_with_its_reason_and_writes_nothing(
    api, catalog, account, owner_conn
):
    path = f"/v1/accounts/{account['id']}/discounts"
    once = api.post("/v1/coupons", {"percent_off": "5", "duration": "once", "max_redemptions": 1}, catalog.admin).body
    assert api.post(path, {"coupon": once["id"]}, catalog.user).status == 201
    inactive = api.post("/v1/coupons", {"percent_off": "5", "duration": "once"}, catalog.admin).body
    api.post(f"/v1/coupons/{inactive['id']}", {"active": False}, catalog.admin)
    euros = api.post("/v1/coupons", {"amount_off": 500, "currency": "EUR", "duration": "once"}, catalog.admin).body
    before = billing.snapshot(owner_conn, catalog.id)

    for coupon, code in ((once, "coupon_max_redeemed"), (inactive, "coupon_inactive"), (euros, "currency_mismatch")):
        reply = api.post(path, {"coupon": coupon["id"]}, catalog.user)
        assert (reply.status, reply.body["error"]["code"]) == (422, code)
    assert billing.snapshot(owner_conn, catalog.id) == before


def test_an_expired_coupon_is_a_422_coupon_expired(api, catalog, account, owner_conn):
    coupon = api.post("/v1/coupons", {"percent_off": "5", "duration": "once"}, catalog.admin).body
    owner_conn.run(
        "UPDATE coupons SET redeem_by = now() - interval '1 second' WHERE id = CAST(:c AS uuid)", c=coupon["id"]
    )

    reply = api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": coupon["id"]}, catalog.user)

    assert (reply.status, reply.body["error"]["code"]) == (422, "coupon_expired")


def test_another_tenant_can_neither_see_nor_redeem_a_coupon(api, catalog, account, other_tenant):
    theirs = api.post("/v1/coupons", {"percent_off": "50", "duration": "forever"}, other_tenant.admin).body

    assert api.get(f"/v1/coupons/{theirs['id']}", catalog.user).status == 404
    assert api.get("/v1/coupons", catalog.user).body["data"] == []
    reply = api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": theirs["id"]}, catalog.user)
    assert (reply.status, reply.body["error"]["code"]) == (404, "resource_missing")
    ours = api.post("/v1/coupons", {"percent_off": "50", "duration": "forever"}, catalog.admin).body
    reply = api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": ours["id"]}, other_tenant.user)
    assert reply.status == 404


def test_an_exclusive_tax_with_a_fixed_amount_coupon_on_a_one_off_invoice(api, catalog, gateway):
    # docs/pricing_adjustments.md, example 3: 4900 - 1000 = 3900 taxed; 19% of 3900 = 741; total 4641
    vat = api.post("/v1/tax_rates", {"display_name": "VAT", "percentage": "19", "inclusive": False}, catalog.admin)
    body = {"email": "e@customer.test", "name": "E", "currency": "USD", "default_tax_rates": [vat.body["id"]]}
    account = api.post("/v1/accounts", body, catalog.user).body
    coupon = api.post("/v1/coupons", {"amount_off": 1000, "currency": "USD", "duration": "once"}, catalog.admin).body
    discount = api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": coupon["id"]}, catalog.user).body
    item = {"currency": "USD", "description": "Onboarding", "amount": 4900}

    made = api.post("/v1/invoices", {"account_id": account["id"], "items": [item]}, catalog.user)

    assert made.status == 201, made.body
    invoice = api.get(f"/v1/invoices/{made.body['id']}", catalog.user).body
    sums = ("subtotal", "total_discount", "tax", "total", "amount_paid", "status")
    assert tuple(invoice[k] for k in sums) == (4900, 1000, 741, 4641, 4641, "paid")
    assert [(line["kind"], line["amount"]) for line in invoice["lines"]["data"]] == [
        ("invoice_item", 4900),
        ("discount", -1000),
        ("tax", 741),
    ]
    assert invoice["lines"]["data"][0]["discount_amounts"] == [{"discount": discount["id"], "amount": 1000}]
    assert invoice["total_tax_amounts"][0] | {"tax_rate": None} == {
        "tax_rate": None,
        "amount": 741,
        "inclusive": False,
        "taxable_amount": 3900,
        "display_name": "VAT",
        "percentage": "19",
    }
    api.post("/v1/invoice_items", {**item, "account_id": account["id"], "amount": 100}, catalog.user)
    again = api.post("/v1/invoices", {"account_id": account["id"]}, catalog.user).body  # once: used up
    assert (again["total_discount"], again["total"]) == (0, 119)


def test_a_once_coupon_taken_by_a_one_off_draft_is_not_taken_again_by_the_next_invoice(api, catalog, gateway):
    account = api.post("/v1/accounts", {"email": "d@customer.test", "name": "D", "currency": "USD"}, catalog.user).body
    coupon = api.post("/v1/coupons", {"amount_off": 1000, "currency": "USD", "duration": "once"}, catalog.admin).body
    api.post(f"/v1/accounts/{account['id']}/discounts", {"coupon": coupon["id"]}, catalog.user)
    item = {"currency": "USD", "description": "Onboarding", "amount": 4900}

    draft = api.post("/v1/invoices", {"account_id": account["id"], "items": [item], "finalize": False}, catalog.user)
    api.post("/v1/invoice_items", {**item, "account_id": account["id"], "amount": 2000}, catalog.user)
    other = api.post("/v1/invoices", {"account_id": account["id"]}, catalog.user).body
    finalized = api.post(f"/v1/invoices/{draft.body['id']}/finalize", None, catalog.user).body

    assert draft.status == 201 and draft.body["total_discount"] == 1000, draft.body
    assert (other["total_discount"], other["total"]) == (0, 2000)  # the draft holds the once discount
    assert (finalized["total_discount"], finalized["total"]) == (1000, 3900)


def test_a_redeem_by_in_any_rfc_3339_spelling_is_read_and_a_malformed_one_is_a_400(api, tenant):
    lower = api.post(
        "/v1/coupons", {"percent_off": "5", "duration": "once", "redeem_by": "2030-01-01t00:00:00z"}, tenant.admin
    )
    odd = api.post(
        "/v1/coupons", {"percent_off": "5", "duration": "once", "redeem_by": "2030-01-01T00:00:00"}, tenant.admin
    )

    assert lower.status == 201 and lower.body["redeem_by"].startswith("2030-01-01T00:00:00"), lower.body
    assert odd.status == 400 and odd.body["error"]["details"][0]["field"] == "redeem_by", odd.body
