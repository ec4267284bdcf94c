"""An invoice as a document a person reads: the PDF and the hosted page (``documents`` renders them).

This module gathers what the document shows (seller = the tenant, buyer = the account, the
invoice with its lines, its credit notes) in the tenant's transaction; rendering is pure.
"""

from dataclasses import replace
from datetime import datetime

from chalicelib import errors
from chalicelib.billing import (
    accounts,
    collection,
    credit_notes,
    documents,
    hosted,
    invoices,
    tenants,
)
from chalicelib.db.scope import tenant_transaction


def of(tx, invoice_id: str) -> documents.InvoiceDocument:
    invoice = invoices.get(tx, invoice_id)
    account = accounts.get(tx, str(invoice["account_id"]))
    return documents.InvoiceDocument(
        seller=tenants.seller(tx),
        buyer={"name": account["name"], "email": account["email"]},
        invoice=invoice,
        credit_notes=credit_notes.of_invoice(tx, invoice_id),
    )


def with_links(tx, tenant_id: str, invoice: dict, base_url: str, now: datetime) -> dict:
    """The invoice with ``hosted_invoice_url`` (signed, expiring) and ``invoice_pdf`` once it is finalized."""
    if invoice["status"] == "draft":
        return {**invoice, "hosted_invoice_url": None, "invoice_pdf": None}
    link = f"{base_url}/v1/hosted_invoices/{hosted.token(tx, tenant_id, str(invoice['id']), now)}"
    return {**invoice, "hosted_invoice_url": link, "invoice_pdf": f"{link}/pdf"}


def of_link(link: str, now: datetime, *, confirmable: bool = False) -> documents.InvoiceDocument:
    """The finalized invoice a signed hosted link grants (no sign-in: the link is the credential).

    Anything wrong (malformed, forged, expired, a draft, a tenant suspended or unknown) is the
    same 404, so a link tells a prober nothing, not even whether its tenant exists.
    """
    tenant_id = hosted.tenant_of(link)
    try:
        with tenant_transaction(tenant_id) as tx:
            document = of(tx, hosted.verify(tx, link, now))
            waiting = collection.waiting_for(tx, str(document.invoice["id"])) if confirmable else None
    except errors.Forbidden:
        raise errors.NotFound("no such invoice link") from None
    if document.invoice["status"] == "draft":
        raise errors.NotFound("no such invoice link")
    if waiting is not None and document.invoice["status"] == "open":
        from chalicelib.billing import gateway_accounts  # only a page with a payment to confirm needs it

        return replace(document, confirm=gateway_accounts.confirmation(tenant_id, waiting.reference))
    return document
