"""Invoice documents: the PDF a customer is sent and the hosted invoice page, rendered from data.

This module owns how an invoice looks to the person who pays it, and nothing else: it is
pure (no database, no HTTP, no clock). It takes an ``InvoiceDocument`` (the invoice exactly
as the API returns it, with its lines, plus the seller, the buyer and the invoice's credit
notes) and returns ``bytes`` (``render_pdf``) or ``str`` (``render_html``). Both renderers
show the same content, built once by ``_view``.

Money is integer minor units with an ISO 4217 code, formatted by ``currencies.format_amount``
(the currency's own exponent: JPY 0 decimals, KWD 3) with ``divmod`` on ints; nothing here is a
float. Dates are shown as YYYY-MM-DD in UTC.

Fonts: the PDF uses the PDF core font Helvetica, so there is no font file to ship or embed.
A core font covers Windows-1252 only (Western European letters, the euro sign, dashes and
quotes). Text is NFKC-normalised first (full-width letters and ligatures become their plain
forms), control characters become spaces, and every character Windows-1252 cannot encode
becomes "?": "株式会社" prints as "????" and an emoji as "?" in the PDF, and rendering never
raises. The hosted page is UTF-8 and shows every name as written. Embedding a Unicode TTF
font (fpdf's ``add_font``) is the change to make if tenants need CJK names in PDFs.

fpdf2 is imported inside ``render_pdf``: importing this module stays cheap on a cold start
(``import fpdf`` also loads Pillow and fontTools, ~180 ms).
"""

import html
import json
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

from chalicelib.billing.currencies import format_amount

MAX_TEXT = 500  # characters of a description or name shown; the rest becomes "..."
STATUS_LABELS = {"draft": "Draft", "open": "Open", "paid": "Paid", "void": "Void", "uncollectible": "Uncollectible"}
MARKED = ("draft", "void", "uncollectible", "paid")  # statuses stamped in large letters on the PDF


@dataclass(frozen=True)
class InvoiceDocument:
    """Everything an invoice document shows. ``invoice`` is the API's invoice, lines included."""

    seller: dict  # {"name", "email"}: the tenant
    buyer: dict  # {"name", "email"}: the billed account
    invoice: dict
    credit_notes: list[dict] = field(default_factory=list)  # each {number, amount, reason, created_at, memo?}
    # A payment of this invoice waiting for the customer's authentication, confirmable here with
    # Stripe.js: {publishable_key, client_secret, payment_method} (None: nothing to confirm).
    confirm: dict | None = None


@dataclass(frozen=True)
class _View:
    """The words and figures of one invoice, in reading order; both renderers draw this."""

    title: str
    status: str
    headline: str
    memo: str
    details: list[tuple[str, str]]
    seller: tuple[str, str]
    buyer: tuple[str, str]
    lines: list[tuple[str, str, str, str, str, bool]]  # description, period, qty, unit price, amount, credit
    totals: list[tuple[str, str, bool]]  # label, amount, emphasised
    credit_notes: list[tuple[str, str, str, str]]  # number, date, reason, amount
    issued: datetime | None


def _day(value) -> str:
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)[:10] if value else ""


def _period(start, end) -> str:
    first, last = _day(start), _day(end)
    return first if not last or first == last else f"{first} – {last}"


def _clip(value) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _headline(invoice: dict) -> str:
    status, currency = invoice["status"], invoice["currency"]
    due = format_amount(invoice["amount_due"], currency)
    if status == "draft":
        return f"Draft: {format_amount(invoice['total'], currency)}, not yet issued"
    if status == "paid":
        when = _day(invoice.get("paid_at"))
        return f"Paid {format_amount(invoice['amount_paid'], currency)}" + (f" on {when}" if when else "")
    if status == "void":
        return "Void: nothing is due"
    if status == "uncollectible":
        return f"Uncollectible: {due} unpaid"
    when = _day(invoice.get("due_at"))
    return f"Amount due {due}" + (f" by {when}" if when else "")


def _details(invoice: dict) -> list[tuple[str, str]]:
    rows = [("Invoice number", _clip(invoice["number"]))] if invoice.get("number") else []
    if invoice["status"] == "draft":
        rows.append(("Created", _day(invoice.get("created_at"))))
    else:
        rows.append(("Date of issue", _day(invoice.get("finalized_at") or invoice.get("created_at"))))
    if invoice.get("due_at"):
        rows.append(("Date due", _day(invoice["due_at"])))
    rows.append(("Billing period", _period(invoice.get("period_start"), invoice.get("period_end"))))
    return rows


def _quantity(value) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _clip(value)


def _line(line: dict, currency: str) -> tuple[str, str, str, str, str, bool]:
    currency = line.get("currency") or currency
    unit = line.get("unit_amount")
    return (
        _clip(line.get("description")),
        _period(line.get("period_start"), line.get("period_end")),
        _quantity(line.get("quantity")),
        "" if unit is None else format_amount(unit, currency),
        format_amount(line["amount"], currency),
        line["amount"] < 0,
    )


def _totals(invoice: dict) -> list[tuple[str, str, bool]]:
    """Reads top to bottom as the sum it is: amount due = total - credit notes - balance - paid.

    Credit notes and the applied balance come after Total because they are not part of it
    (``invoices_amounts_add_up`` in migrations/0007): they settle it, as the amount paid does.
    """
    currency = invoice["currency"]
    pre = invoice.get("pre_payment_credit_notes_amount") or 0
    post = invoice.get("post_payment_credit_notes_amount") or 0
    rows = [("Subtotal", invoice["subtotal"], False), *_adjustments(invoice), ("Total", invoice["total"], False)]
    if pre:
        rows.append(("Credit notes", -pre, False))
    if invoice.get("credit_applied"):
        rows.append(("Applied balance", -invoice["credit_applied"], False))
    rows += [("Amount paid", invoice.get("amount_paid") or 0, False), ("Amount due", invoice["amount_due"], True)]
    if post:
        rows.append(("Credited after payment", post, False))
    return [(label, format_amount(amount, currency), strong) for label, amount, strong in rows]


def _adjustments(invoice: dict) -> list[tuple[str, int, bool]]:
    """Between Subtotal and Total: the discounts, then each rate's tax (an inclusive one is in the
    subtotal already, so it is shown as included, and Total adds only the exclusive ones)."""
    rows = [("Discount", -invoice["total_discount"], False)] if invoice.get("total_discount") else []
    for tax in invoice.get("total_tax_amounts") or ():
        included = " included" if tax["inclusive"] else ""
        rows.append((f"{tax['display_name']} {tax['percentage']}%{included}", tax["amount"], False))
    return rows


def _credit_note(note: dict, currency: str) -> tuple[str, str, str, str]:
    reason = _clip(note.get("reason")).replace("_", " ")
    reason = reason[:1].upper() + reason[1:]
    memo = _clip(note.get("memo"))
    return (
        _clip(note.get("number")),
        _day(note.get("created_at")),
        f"{reason}: {memo}" if reason and memo else reason or memo,
        format_amount(note["amount"], note.get("currency") or currency),
    )


def _party(party: dict) -> tuple[str, str]:
    return _clip(party.get("name")), _clip(party.get("email"))


def _view(doc: InvoiceDocument) -> _View:
    invoice = doc.invoice
    currency = invoice["currency"]
    return _View(
        title="Draft invoice" if invoice["status"] == "draft" else "Invoice",
        status=invoice["status"],
        headline=_headline(invoice),
        memo=_clip(invoice.get("description")),
        details=_details(invoice),
        seller=_party(doc.seller),
        buyer=_party(doc.buyer),
        lines=[_line(line, currency) for line in invoice["lines"]["data"]],
        totals=_totals(invoice),
        credit_notes=[_credit_note(note, currency) for note in doc.credit_notes],
        issued=invoice.get("finalized_at") or invoice.get("created_at"),
    )


# --- PDF ------------------------------------------------------------------------------------

INK, MUTED, RULE, CREDIT = (17, 24, 39), (107, 114, 128), (209, 213, 219), (4, 120, 87)
MARK_COLOURS = {"draft": (180, 83, 9), "void": (185, 28, 28), "uncollectible": (185, 28, 28), "paid": (4, 120, 87)}
# (heading, mm, alignment); each table is 174 mm wide, A4 less two 18 mm margins
LINE_COLUMNS = (
    ("Description", 58, "LEFT"),
    ("Period", 42, "LEFT"),
    ("Qty", 15, "RIGHT"),
    ("Unit price", 28, "RIGHT"),
    ("Amount", 31, "RIGHT"),
)
NOTE_COLUMNS = (("Number", 36, "LEFT"), ("Date", 24, "LEFT"), ("Reason", 85, "LEFT"), ("Amount", 29, "RIGHT"))


def _pdf_text(value) -> str:
    """What Helvetica can draw: NFKC, no control characters, "?" for what Windows-1252 lacks; clipped
    after normalising, since NFKC can expand one character into many ("\ufdfa" is 18)."""
    text = unicodedata.normalize("NFKC", str(value))
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return _clip(text.encode("cp1252", "replace").decode("cp1252"))


def render_pdf(doc: InvoiceDocument) -> bytes:
    """An A4 PDF of the invoice (core fonts only; see the module docstring for Unicode)."""
    from fpdf import FPDF  # here, not at the top: cold starts that never render a PDF skip it

    view = _view(doc)
    pdf = _new_pdf(FPDF, view)
    _pdf_header(pdf, view)
    _pdf_parties(pdf, view)
    _pdf_lines(pdf, view)
    _pdf_totals(pdf, view)
    _pdf_credit_notes(pdf, view)
    return bytes(pdf.output())


def _new_pdf(base, view: _View):
    number = next((value for label, value in view.details if label == "Invoice number"), "")[:60]
    reference = number or view.title

    class InvoicePDF(base):
        def footer(self):
            self.set_y(-14)
            self.set_font("Helvetica", size=8)
            self.set_text_color(*MUTED)
            self.cell(0, 5, _pdf_text(f"{reference}  ·  page {self.page_no()} of {{nb}}"), align="C")

    pdf = InvoicePDF(format="A4", unit="mm")
    pdf.core_fonts_encoding = "cp1252"  # the WinAnsiEncoding fpdf declares for core fonts
    pdf.set_margins(18, 18, 18)
    pdf.set_auto_page_break(True, margin=20)
    if view.issued is not None:
        pdf.set_creation_date(view.issued)  # the same bytes for the same invoice
    pdf.set_title(_pdf_text(f"{view.title} {number}".strip()))
    pdf.set_author(_pdf_text(view.seller[0]))
    pdf.add_page()
    return pdf


def _pdf_header(pdf, view: _View) -> None:
    pdf.set_text_color(*INK)
    pdf.set_font("Helvetica", "B", 22)
    pdf.cell(110, 11, view.title)
    if view.status in MARKED:
        colour = MARK_COLOURS[view.status]
        pdf.set_draw_color(*colour)
        pdf.set_text_color(*colour)
        pdf.set_line_width(0.8)
        pdf.set_font("Helvetica", "B", 16)
        pdf.set_x(pdf.w - pdf.r_margin - 60)
        pdf.cell(60, 11, STATUS_LABELS[view.status].upper(), border=1, align="C")
        pdf.set_line_width(0.2)
    pdf.ln(15)
    for label, value in view.details:
        pdf.set_font("Helvetica", size=9)
        pdf.set_text_color(*MUTED)
        pdf.cell(32, 5.5, label)
        pdf.set_text_color(*INK)
        pdf.multi_cell(0, 5.5, _pdf_text(value), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)


def _pdf_parties(pdf, view: _View) -> None:
    top, bottoms = pdf.get_y(), []
    for offset, heading, (name, email) in ((0, "From", view.seller), (90, "Bill to", view.buyer)):
        pdf.set_xy(pdf.l_margin + offset, top)
        pdf.set_font("Helvetica", "B", 8)
        pdf.set_text_color(*MUTED)
        pdf.cell(84, 5, heading.upper(), new_x="LEFT", new_y="NEXT")
        pdf.set_font("Helvetica", "B", 10)
        pdf.set_text_color(*INK)
        pdf.multi_cell(84, 5, _pdf_text(name), align="L", new_x="LEFT", new_y="NEXT")
        pdf.set_font("Helvetica", size=9)
        pdf.multi_cell(84, 5, _pdf_text(email), align="L", new_x="LEFT", new_y="NEXT")
        bottoms.append(pdf.get_y())
    pdf.set_xy(pdf.l_margin, max(bottoms) + 7)
    pdf.set_font("Helvetica", "B", 13)
    pdf.multi_cell(0, 7, _pdf_text(view.headline), align="L", new_x="LMARGIN", new_y="NEXT")
    if view.memo:
        pdf.set_font("Helvetica", size=9)
        pdf.set_text_color(*MUTED)
        pdf.multi_cell(0, 5, _pdf_text(view.memo), align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(5)


def _pdf_table(pdf, columns, rows, credit_column=None) -> None:
    """A ruled table of ``columns`` (heading, width in mm, alignment); a credit's last cell in green."""
    from fpdf.fonts import FontFace

    pdf.set_draw_color(*RULE)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*INK)
    heading_style = FontFace(emphasis="BOLD", color=MUTED, fill_color=(243, 244, 246))
    headings, widths, aligns = zip(*columns, strict=True)
    with pdf.table(
        col_widths=widths,
        width=sum(widths),
        align="LEFT",
        borders_layout="HORIZONTAL_LINES",
        headings_style=heading_style,
        line_height=5,
        padding=(1.8, 1.5),
        v_align="TOP",
    ) as table:
        head = table.row()
        for text, align in zip(headings, aligns, strict=True):
            head.cell(text, align=align)
        for values in rows:
            row = table.row()
            credit = credit_column is not None and values[credit_column]
            for index, (text, align) in enumerate(zip(values, aligns, strict=False)):
                style = FontFace(color=CREDIT) if credit and index == len(widths) - 1 else None
                row.cell(_pdf_text(text), align=align, style=style)


def _pdf_lines(pdf, view: _View) -> None:
    _pdf_table(pdf, LINE_COLUMNS, view.lines, credit_column=5)
    pdf.ln(4)


def _pdf_totals(pdf, view: _View) -> None:
    left = pdf.w - pdf.r_margin - 98
    if pdf.get_y() + 7 * len(view.totals) > pdf.page_break_trigger:
        pdf.add_page()
    pdf.set_draw_color(*RULE)
    for label, amount, strong in view.totals:
        pdf.set_x(left)
        pdf.set_font("Helvetica", "B" if strong else "", 10 if strong else 9)
        pdf.set_text_color(*(INK if strong else MUTED))
        border = "T" if strong else 0
        pdf.cell(50, 6.5, label, border=border)
        pdf.set_text_color(*INK)
        pdf.cell(48, 6.5, amount, border=border, align="R", new_x="LMARGIN", new_y="NEXT")


def _pdf_credit_notes(pdf, view: _View) -> None:
    if not view.credit_notes:
        return
    pdf.ln(8)
    pdf.set_font("Helvetica", "B", 11)
    pdf.set_text_color(*INK)
    pdf.cell(0, 7, "Credit notes", new_x="LMARGIN", new_y="NEXT")
    _pdf_table(pdf, NOTE_COLUMNS, view.credit_notes)


# --- HTML -----------------------------------------------------------------------------------

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:820px;margin:40px auto;padding:40px 44px;background:#fff;border-radius:12px;
box-shadow:0 1px 3px rgba(0,0,0,.08),0 8px 24px rgba(0,0,0,.06)}
header{display:flex;justify-content:space-between;align-items:flex-start;gap:16px}
h1{margin:0;font-size:28px;letter-spacing:-.01em}
h2{margin:36px 0 0;font-size:17px}
h2+.scroll{margin-top:10px}
.badge{display:inline-block;padding:3px 12px;border-radius:999px;font-size:13px;font-weight:600;
background:#e5e7eb;color:#374151}
.badge.paid{background:#d1fae5;color:#065f46}.badge.open{background:#dbeafe;color:#1e40af}
.badge.draft{background:#fef3c7;color:#92400e}.badge.void,.badge.uncollectible{background:#fee2e2;color:#991b1b}
dl.details{display:grid;grid-template-columns:max-content 1fr;gap:2px 20px;margin:20px 0 0;font-size:14px}
dt{color:#6b7280}dd{margin:0}
.parties{display:grid;grid-template-columns:1fr 1fr;gap:24px;margin:28px 0}
.parties h3{margin:0 0 4px;font-size:12px;letter-spacing:.06em;text-transform:uppercase;color:#6b7280}
.parties p{margin:0;overflow-wrap:anywhere}.parties .name{font-weight:600}
.headline{font-size:20px;font-weight:600;margin:0}.memo{color:#6b7280;margin:4px 0 0}
.download{display:inline-block;margin-top:16px;padding:8px 16px;border-radius:8px;background:#111827;
color:#fff;text-decoration:none;font-size:14px;font-weight:600}
.scroll{overflow-x:auto;margin-top:28px}
table{width:100%;border-collapse:collapse;font-size:14px}
th{text-align:left;font-size:12px;color:#6b7280;font-weight:600;background:#f9fafb;padding:8px 10px;
border-bottom:1px solid #e5e7eb}
td{padding:10px;border-bottom:1px solid #e5e7eb;vertical-align:top;overflow-wrap:anywhere}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.period{white-space:nowrap;color:#4b5563}.credit{color:#047857}
table.totals{width:auto;min-width:320px;margin:20px 0 0 auto}
table.totals td{border:0;padding:4px 10px;color:#4b5563}
table.totals tr.strong td{border-top:1px solid #111827;color:#111827;font-weight:700;font-size:16px;padding-top:8px}
footer{margin-top:36px;color:#9ca3af;font-size:12px;text-align:center}
@media (max-width:640px){main{margin:0;border-radius:0;padding:24px 18px}.parties{grid-template-columns:1fr}}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _safe_url(url: str | None) -> str | None:
    """A link to follow: http(s) or a relative path; a javascript: or data: URL is dropped."""
    return url if url and urlsplit(url.strip()).scheme.lower() in ("", "http", "https") else None


def render_html(doc: InvoiceDocument, *, pdf_url: str | None = None, script_nonce: str | None = None) -> str:
    """The hosted invoice page: one self-contained HTML document (inline CSS, no asset). It has no
    script, except Stripe.js and one inline script under ``script_nonce`` where a payment waits for
    the customer to confirm it (``doc.confirm``).

    Every interpolated value goes through ``html.escape``: names and descriptions are tenant text.
    """
    view = _view(doc)
    reference = next((value for label, value in view.details if label == "Invoice number"), "")
    pay = _html_confirm(doc.confirm, script_nonce) if doc.confirm and script_nonce else ""
    parts = (_html_header(view), pay, _html_parties(view, _safe_url(pdf_url)), _html_lines(view), _html_totals(view))
    body = "".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n<meta name="referrer" content="no-referrer">\n'
        f"<title>{_e(' '.join(filter(None, (view.title, reference, '-', view.seller[0]))))}</title>\n"
        f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}{_html_credit_notes(view)}"
        f"<footer>{_e(view.seller[0])}{' · ' + _e(reference) if reference else ''}</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def _html_confirm(confirm: dict, nonce: str) -> str:
    """Confirm a waiting payment with Stripe.js (3-D Secure in Stripe's own frame), then reload."""
    values = {k: confirm[k] for k in ("publishable_key", "client_secret", "payment_method")}
    data = json.dumps(values).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        '<section class="confirm"><p>Your bank asks you to confirm this payment.</p>'
        '<button id="confirm-payment" type="button">Confirm payment</button><p id="confirm-result"></p></section>\n'
        '<script src="https://js.stripe.com/v3/"></script>\n'
        f'<script nonce="{_e(nonce)}">const pay = {data};'
        "document.getElementById('confirm-payment').addEventListener('click', async () => {"
        "const stripe = Stripe(pay.publishable_key);"
        "const r = await stripe.confirmCardPayment(pay.client_secret, {payment_method: pay.payment_method});"
        "document.getElementById('confirm-result').textContent ="
        " r.error ? r.error.message : 'Thank you: your payment is confirmed.';"
        "if (!r.error) setTimeout(() => location.reload(), 3000);});</script>\n"
    )


def _html_header(view: _View) -> str:
    details = "".join(f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>" for label, value in view.details)
    return (
        f"<header><h1>{_e(view.title)}</h1>"
        f'<span class="badge {_e(view.status)}">{_e(STATUS_LABELS.get(view.status, view.status))}</span></header>\n'
        f'<dl class="details">{details}</dl>\n'
    )


def _html_parties(view: _View, pdf_url: str | None) -> str:
    blocks = "".join(
        f'<div><h3>{_e(heading)}</h3><p class="name">{_e(name)}</p><p>{_e(email)}</p></div>'
        for heading, (name, email) in (("From", view.seller), ("Bill to", view.buyer))
    )
    memo = f'<p class="memo">{_e(view.memo)}</p>' if view.memo else ""
    link = f'<a class="download" href="{_e(pdf_url)}" download>Download PDF</a>' if pdf_url else ""
    return f'<section class="parties">{blocks}</section>\n<p class="headline">{_e(view.headline)}</p>{memo}{link}\n'


def _html_lines(view: _View) -> str:
    rows = "".join(
        f'<tr><td>{_e(description)}</td><td class="period">{_e(period)}</td><td class="num">{_e(quantity)}</td>'
        f'<td class="num">{_e(unit)}</td><td class="num{" credit" if credit else ""}">{_e(amount)}</td></tr>'
        for description, period, quantity, unit, amount, credit in view.lines
    )
    return (
        '<div class="scroll"><table class="lines"><thead><tr><th>Description</th><th>Period</th>'
        '<th class="num">Qty</th><th class="num">Unit price</th><th class="num">Amount</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>\n"
    )


def _html_totals(view: _View) -> str:
    rows = "".join(
        f'<tr class="{"strong" if strong else "plain"}"><td>{_e(label)}</td><td class="num">{_e(amount)}</td></tr>'
        for label, amount, strong in view.totals
    )
    return f'<table class="totals"><tbody>{rows}</tbody></table>\n'


def _html_credit_notes(view: _View) -> str:
    if not view.credit_notes:
        return ""
    rows = "".join(
        f'<tr><td>{_e(number)}</td><td class="period">{_e(day)}</td><td>{_e(reason)}</td>'
        f'<td class="num">{_e(amount)}</td></tr>'
        for number, day, reason, amount in view.credit_notes
    )
    return (
        '<h2>Credit notes</h2><div class="scroll"><table class="notes"><thead><tr><th>Number</th><th>Date</th>'
        f'<th>Reason</th><th class="num">Amount</th></tr></thead><tbody>{rows}</tbody></table></div>\n'
    )
