from chalicelib.db import transaction


def _invoices(tenant_id: str, account_id: str, count: int, status: str = "open") -> None:
    """``count`` invoices in one statement, many sharing a created_at (ties must not break paging)."""
    with transaction(tenant_id=tenant_id) as tx:
        tx.run(
            "INSERT INTO invoices (account_id, status, currency, subtotal, total, amount_due, period_start,"
            " period_end, created_at)"
            " SELECT :a, :s, 'USD', 4900, 4900, 4900,"
            " timestamptz '2026-01-01' + (g || ' days')::interval,"
            " timestamptz '2026-01-01' + (g || ' days')::interval + interval '1 month',"
            " timestamptz '2026-06-01' + ((g / 7) || ' seconds')::interval"
            " FROM generate_series(1, :n) g",
            a=account_id,
            s=status,
            n=count,
        )
        invoice = tx.scalar("SELECT id FROM invoices ORDER BY created_at LIMIT 1")
        tx.run(
            "INSERT INTO invoice_lines (invoice_id, kind, description, quantity, unit_amount, amount, currency,"
            " period_start, period_end) SELECT id, 'subscription', 'Pro', 1, 4900, 4900, 'USD', period_start,"
            " period_end FROM invoices WHERE id = :i",
            i=invoice,
        )


def test_pagination_walks_1000_invoices_with_no_duplicate_and_no_gap(api, account, catalog):
    _invoices(catalog.id, account["id"], 1000)
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=100" + (f"&starting_after={cursor}" if cursor else "")
        reply = api.get(f"/v1/invoices{query}", catalog.user)
        assert reply.status == 200
        seen += [invoice["id"] for invoice in reply.body["data"]]
        pages += 1
        if not reply.body["has_more"]:
            assert reply.body["next_cursor"] is None
            break
        cursor = reply.body["next_cursor"]

    with transaction(tenant_id=catalog.id) as tx:
        every = {str(row[0]) for row in tx.run("SELECT id FROM invoices")}
    assert len(seen) == len(set(seen)) == 1000
    assert set(seen) == every
    assert pages == 10


def test_invoice_list_uses_an_index_not_a_scan_of_everything(api, account, catalog, owner_conn):
    _invoices(catalog.id, account["id"], 1000)
    owner_conn.run("ANALYZE invoices")
    owner_conn.run("SET ROLE billing_app")
    owner_conn.run("SELECT set_config('app.tenant_id', :t, false)", t=catalog.id)
    from chalicelib.db.queries import load

    sql = load("invoices")["list"]
    for name in ("account_id", "status", "period_start_gte", "period_start_lt", "after"):
        sql = sql.replace(f":{name}", "NULL")
    plan = "\n".join(row[0] for row in owner_conn.run("EXPLAIN " + sql.replace(":limit", "21")))
    assert "invoices_tenant_created" in plan, plan


def test_invoice_filters_by_account_status_and_period(api, account, catalog):
    _invoices(catalog.id, account["id"], 30)
    _invoices(catalog.id, account["id"], 5, status="paid")

    paid = api.get("/v1/invoices?status=paid&limit=100", catalog.user).body["data"]
    january = api.get(
        "/v1/invoices?period_start_gte=2026-01-01T00:00:00Z&period_start_lt=2026-01-11T00:00:00Z&limit=100",
        catalog.user,
    ).body["data"]
    by_account = api.get(f"/v1/invoices?account_id={account['id']}&limit=100", catalog.user).body["data"]

    assert len(paid) == 5 and {i["status"] for i in paid} == {"paid"}
    assert len(january) == 9 + 5  # Jan 2..10 from the first batch, all five of the second
    assert len(by_account) == 35


def test_invalid_filters_and_limits_are_400_with_fields(api, catalog):
    reply = api.get("/v1/invoices?limit=0&status=lost&account_id=zzz&period_start_gte=yesterday", catalog.user)

    assert reply.status == 400
    fields = {d["field"] for d in reply.body["error"]["details"]}
    assert fields == {"limit"}
    reply = api.get("/v1/invoices?status=lost&account_id=zzz&period_start_gte=yesterday", catalog.user)
    assert {d["field"] for d in reply.body["error"]["details"]} == {"status", "account_id", "period_start_gte"}
    unknown_cursor = api.get("/v1/invoices?starting_after=3f1c7a52-8a51-4f43-9a43-5b0b1d7a9e10", catalog.user)
    assert (unknown_cursor.status, unknown_cursor.body["error"]["code"]) == (404, "resource_missing")


def test_invoice_detail_has_lines_and_other_tenants_get_404(api, account, catalog, other_tenant):
    _invoices(catalog.id, account["id"], 1)
    invoice_id = api.get("/v1/invoices", catalog.user).body["data"][0]["id"]

    reply = api.get(f"/v1/invoices/{invoice_id}", catalog.user)

    assert reply.status == 200
    assert [(line["kind"], line["amount"]) for line in reply.body["lines"]["data"]] == [("subscription", 4900)]
    assert api.get(f"/v1/invoices/{invoice_id}", other_tenant.user).status == 404
    assert api.get("/v1/invoices", other_tenant.user).body["data"] == []
