"""A sample invoice rendered both ways, for the README pictures and for looking at a change.

    python -m devtools.render_samples OUTDIR     # writes OUTDIR/invoice.pdf and OUTDIR/invoice.html

The invoice is made up but adds up: a seat-based plan, a proration credit for the plan it
replaced, metered usage, one pre-payment credit note and some account balance applied
(amount due = total - credit notes - applied balance - amount paid).
"""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from chalicelib.billing.documents import InvoiceDocument, render_html, render_pdf


def _at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def _line(kind, description, quantity, unit_amount, start, end, metric=None) -> dict:
    return {
        "kind": kind,
        "description": description,
        "metric": metric,
        "quantity": quantity,
        "unit_amount": unit_amount,
        "amount": quantity * unit_amount,
        "currency": "USD",
        "period_start": _at(start),
        "period_end": _at(end),
    }


def sample() -> InvoiceDocument:
    lines = [
        _line("subscription", "Growth plan, monthly (5 seats)", 5, 4900, "2026-03-01", "2026-04-01"),
        _line("proration", "Unused time on Starter plan (5 seats) after 15 Feb", 5, -950, "2026-02-15", "2026-03-01"),
        _line("usage", "API calls, per 1,000 requests", 1284, 20, "2026-02-01", "2026-03-01", metric="api_calls"),
    ]
    subtotal = sum(line["amount"] for line in lines)
    credit_note = {
        "number": "ACME-CN-000007",
        "amount": 2500,
        "reason": "product_unsatisfactory",
        "memo": "SLA credit for the 9 February outage",
        "created_at": _at("2026-03-02T10:15:00"),
    }
    invoice = {
        "id": "5f0c6f4e-8d1b-4f7a-9a51-0d6f2c9b8e13",
        "number": "ACME-000042",
        "status": "open",
        "currency": "USD",
        "subtotal": subtotal,
        "total": subtotal,
        "credit_applied": 1000,
        "amount_paid": 0,
        "pre_payment_credit_notes_amount": credit_note["amount"],
        "post_payment_credit_notes_amount": 0,
        "amount_due": subtotal - credit_note["amount"] - 1000,
        "period_start": _at("2026-03-01"),
        "period_end": _at("2026-04-01"),
        "created_at": _at("2026-03-01T00:00:05"),
        "finalized_at": _at("2026-03-01T01:00:00"),
        "due_at": _at("2026-03-31"),
        "lines": {"object": "list", "data": lines},
    }
    return InvoiceDocument(
        seller={"name": "Acme Analytics Ltd", "email": "billing@acme-analytics.example"},
        buyer={"name": "Globex Corporation", "email": "accounts.payable@globex.example"},
        invoice=invoice,
        credit_notes=[credit_note],
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    out = parser.parse_args(argv).outdir
    out.mkdir(parents=True, exist_ok=True)
    document = sample()
    (out / "invoice.pdf").write_bytes(render_pdf(document))
    (out / "invoice.html").write_text(render_html(document, pdf_url="invoice.pdf"), encoding="utf-8")
    print(f"{out / 'invoice.pdf'}\n{out / 'invoice.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
