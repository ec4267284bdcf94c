"""Test helpers for tenants on Stripe: connect one to the stand-in, save a card the way Stripe.js
would, and deliver the stand-in's signed webhooks to the app's route (through chalice's test client)."""

from dataclasses import dataclass

import stripe


@dataclass
class Connected:
    tenant_id: str
    admin: str
    user: str
    keys: dict  # the stand-in account: id, secret_key, webhook_secret
    delivered: int = 0  # how many of the account's events were delivered so far


def connect(api, standin, tenant) -> Connected:
    keys = standin.create_account()
    body = {"provider": "stripe", "secret_key": keys["secret_key"], "webhook_secret": keys["webhook_secret"]}
    reply = api.call("PUT", "/v1/gateway", body, tenant.admin)
    assert reply.status == 200, reply.body
    return Connected(tenant.id, tenant.admin, tenant.user, keys)


def sdk(standin, connected: Connected) -> stripe.StripeClient:
    """The tenant's own Stripe, as its front end (Stripe.js) or the customer would act on it."""
    return stripe.StripeClient(connected.keys["secret_key"], base_addresses={"api": standin.url}, max_network_retries=0)


def webhook(api, connected: Connected, payload: bytes, signature: str | None):
    headers = {"Stripe-Signature": signature} if signature is not None else {}
    return api.call("POST", f"/v1/gateway/stripe/{connected.tenant_id}", raw=payload, headers=headers)


def deliver(api, standin, connected: Connected, times: int = 1) -> list:
    """The account's events not delivered yet, each signed now and delivered ``times`` times."""
    events = standin.events(connected.keys["id"])[connected.delivered :]
    connected.delivered += len(events)
    replies = []
    for event in events:
        for _ in range(times):
            reply = webhook(api, connected, *standin.signed(connected.keys["id"], event))
            assert reply.status == 200, reply.body
            replies.append(reply)
    return replies


def save_card(api, standin, connected: Connected, account_id: str, token: str = "pm_card_visa") -> dict:
    """Set up a card for the account: the app's SetupIntent, confirmed as Stripe.js would, and the
    webhook that makes it the default. The account as the API shows it then."""
    reply = api.post(f"/v1/accounts/{account_id}/payment_methods/setup", None, connected.user)
    assert reply.status == 201, reply.body
    sdk(standin, connected).v1.setup_intents.confirm(reply.body["id"], {"payment_method": token})
    deliver(api, standin, connected)
    account = api.get(f"/v1/accounts/{account_id}", connected.user)
    assert account.body["default_payment_method"], account.body
    return account.body


def intents(standin, connected: Connected, account_id: str | None = None) -> list[dict]:
    """The PaymentIntents in Stripe's own records (of one account of ours, by its metadata)."""
    found = standin.payment_intents(connected.keys["id"])
    return [pi for pi in found if account_id is None or pi["metadata"].get("account_id") == account_id]


class OnStandin:
    """A tenant's accounts on the stand-in, seen as the mock gateway is: scripted per account, the
    charges Stripe made (its own records), and its webhooks replayed into the app, in any order."""

    def __init__(self, standin, tenant_id: str, account_ids: list[str]):
        from chalicelib.billing import calendar, gateway_credentials

        self.standin, self.tenant_id = standin, tenant_id
        self.keys = standin.create_account()
        keys = (self.keys["secret_key"], self.keys["webhook_secret"], self.keys["id"], calendar.utcnow().isoformat())
        gateway_credentials.store(tenant_id, gateway_credentials.Credentials(tenant_id, "stripe", *keys))
        self.customers = {}
        for account in account_ids:
            self.add(account)

    def add(self, account_id: str) -> None:
        """A Stripe Customer for the account with a card that succeeds, on file."""
        from chalicelib.db import transaction

        client = stripe.StripeClient(self.keys["secret_key"], base_addresses={"api": self.standin.url})
        customer = client.v1.customers.create({"metadata": {"account_id": account_id}})["id"]
        setup = client.v1.setup_intents.create({"customer": customer})
        method = client.v1.setup_intents.confirm(setup["id"], {"payment_method": "pm_card_visa"})["payment_method"]
        with transaction(tenant_id=self.tenant_id) as tx:
            tx.run(
                "UPDATE accounts SET gateway_customer_id = :c, gateway_account_id = :g,"
                " payment_method = jsonb_build_object('id', CAST(:m AS text)) WHERE id = :a",
                g=self.keys["id"],
                c=customer,
                m=method,
                a=account_id,
            )
        self.customers[account_id] = customer

    def script(self, account_id: str, outcomes: list[str]) -> None:
        self.standin.script(self.customers[account_id], outcomes)

    @property
    def charges(self) -> list[tuple]:
        """(PaymentIntent, account, amount, currency) of every charge that succeeded at Stripe."""
        return [
            (pi["id"], pi["metadata"]["account_id"], pi["amount"], pi["currency"].upper())
            for pi in self.standin.payment_intents(self.keys["id"])
            if pi["status"] == "succeeded"
        ]

    def replay_webhooks(self, times: int, order) -> None:
        """Every event so far, shuffled by ``order`` (a random.Random), each delivered ``times`` times."""
        from chalicelib import handlers

        events = self.standin.events(self.keys["id"])
        order.shuffle(events)
        for event in events:
            for _ in range(times):
                handlers.stripe_webhook(self.tenant_id, *self.standin.signed(self.keys["id"], event))
