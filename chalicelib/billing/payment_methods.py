"""An account's way to pay at its tenant's gateway: the Stripe Customer and the default card.

``setup`` makes the account's Customer once per Stripe account (our key
``customer:{stripe account}:{account}``, and the id kept on the account, so a retry days later
finds it; a tenant that connects another Stripe account gets new customers there) and a
SetupIntent whose ``client_secret`` the tenant's page hands to Stripe.js. The card becomes the
account's default only when Stripe says the setup succeeded (``set_default``, from the webhook);
a later event never loses to an older one that arrives after it.
"""

from chalicelib import audit, encoding
from chalicelib.billing import accounts, gateways
from chalicelib.db.queries import load

Q = load("payment_methods")


def setup(tenant_id: str, actor, account_id: str, transaction) -> dict:
    """A SetupIntent for the account (its Customer made first if it has none); ``transaction(tenant)``
    opens the tenant's scope for each short step (no transaction stays open while Stripe answers)."""
    with transaction(tenant_id) as tx:
        account = accounts.get(tx, account_id)  # 404 first: another tenant's id learns nothing more
    gateway = gateways.stripe_of(tenant_id)
    with transaction(tenant_id) as tx:
        customer = tx.scalar(Q["customer_of"], id=account_id, gateway_account=gateway.account_id)
    if customer is None:
        key = f"customer:{gateway.account_id}:{account_id}"
        made = gateway.create_customer(account, idempotency_key=key)
        with transaction(tenant_id) as tx:
            customer = tx.scalar(Q["keep_customer"], id=account_id, customer=made, gateway_account=gateway.account_id)
            audit.record(tx, actor, "account.gateway_customer_created", "account", account_id, {"customer": customer})
    intent = gateway.setup_intent(customer, account_id)
    return {"object": "setup_intent", "account_id": account_id, **intent}


def set_default(tx, customer: str, method: dict, at: int) -> bool:
    """The customer's confirmed card becomes its account's default, unless a newer one already is."""
    row = tx.one(Q["set_default"], customer=customer, method=encoding.dumps(method), at=at)
    if row is None:
        return False
    audit.record(tx, "system:gateway", "account.payment_method_set", "account", row["id"], method)
    return True


def shown(method: dict | None) -> dict | None:
    """What the API shows of a card: no time of ours, nothing that could charge it."""
    if not method:
        return None
    return {k: method.get(k) for k in ("id", "type", "brand", "last4", "exp_month", "exp_year")}
