"""Invoice documents: the PDF read back with pypdf, the hosted page parsed with html.parser."""

import dataclasses
import io
import subprocess
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pypdf
import pytest

from chalicelib.billing.currencies import UnknownCurrency, format_amount
from chalicelib.billing.documents import InvoiceDocument, render_html, render_pdf

ROOT = Path(__file__).resolve().parents[2]


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


LINES = [
    _line("subscription", "Pro plan (3 seats)", 3, 2900, "2026-03-01", "2026-04-01"),
    _line("proration", "Unused time on Basic plan after 10 Feb", 1, -1250, "2026-02-10", "2026-03-01"),
    _line("usage", "Emails sent", 4200, 1, "2026-02-01", "2026-03-01", metric="emails"),
]
CREDIT_NOTE = {"number": "TST-CN-000001", "amount": 1500, "reason": "order_change", "created_at": _at("2026-03-02")}


def _document(**invoice) -> InvoiceDocument:
    """USD 116.50 of lines, less a USD 15.00 credit note and USD 6.50 of balance: USD 95.00 due."""
    base = {
        "id": "0b7e3f0e-6a43-4a59-8d6e-1f8f4b1c2d3e",
        "number": "TST-000042",
        "status": "open",
        "currency": "USD",
        "subtotal": 11650,
        "total": 11650,
        "credit_applied": 650,
        "amount_due": 9500,
        "amount_paid": 0,
        "pre_payment_credit_notes_amount": 1500,
        "post_payment_credit_notes_amount": 0,
        "period_start": _at("2026-03-01"),
        "period_end": _at("2026-04-01"),
        "created_at": _at("2026-03-01T00:00:05"),
        "finalized_at": _at("2026-03-01T01:00:00"),
        "due_at": _at("2026-03-31"),
        "lines": {"object": "list", "data": LINES},
    }
    return InvoiceDocument(
        seller={"name": "Tessellate Software Ltd", "email": "billing@tessellate.example"},
        buyer={"name": "Initech LLC", "email": "ap@initech.example"},
        invoice={**base, **invoice},
        credit_notes=[CREDIT_NOTE],
    )


def _pdf_text(pdf: bytes) -> str:
    """Every page's text, whitespace collapsed so that assertions do not depend on line breaks."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text().split()) for page in reader.pages)


class _Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children, self.parts = tag, attrs, [], []

    def text(self) -> str:
        return " ".join(" ".join(self.parts + [child.text() for child in self.children]).split())

    def find_all(self, tag: str, css_class: str | None = None) -> list["_Node"]:
        found = []
        for child in self.children:
            if child.tag == tag and (css_class is None or css_class in child.attrs.get("class", "").split()):
                found.append(child)
            found += child.find_all(tag, css_class)
        return found


class _Tree(HTMLParser):
    """The page as nested nodes (html.parser keeps entities decoded, so escaped text reads as text)."""

    VOID = {"meta", "link", "br", "img", "input", "hr"}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.root = _Node("#document", {})
        self.open = [self.root]
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, dict(attrs))
        self.open[-1].children.append(node)
        if tag not in self.VOID:
            self.open.append(node)

    def handle_endtag(self, tag):
        while len(self.open) > 1 and self.open.pop().tag != tag:
            pass

    def handle_data(self, data):
        self.open[-1].parts.append(data)


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (123456, "USD", "USD 1,234.56"),
        (-1200, "USD", "-USD 12.00"),
        (-5, "USD", "-USD 0.05"),
        (0, "USD", "USD 0.00"),
        (0, "JPY", "JPY 0"),
        (4900, "JPY", "JPY 4,900"),
        (4900, "BHD", "BHD 4.900"),
        (12345, "CLF", "CLF 1.2345"),
        (999_999_999_999, "USD", "USD 9,999,999,999.99"),
        (-999_999_999_999, "JPY", "-JPY 999,999,999,999"),
        (10**30 + 1, "USD", "USD 10,000,000,000,000,000,000,000,000,000.01"),
    ],
)
def test_format_amount_splits_minor_units_by_the_currencys_exponent(amount, currency, shown):
    assert format_amount(amount, currency) == shown


@pytest.mark.parametrize("amount", [12.5, True, "1200", None])
def test_format_amount_refuses_anything_but_an_int_of_minor_units(amount):
    with pytest.raises(TypeError):
        format_amount(amount, "USD")


def test_format_amount_refuses_a_code_that_is_not_a_currency():
    with pytest.raises(UnknownCurrency):
        format_amount(100, "XXX")


def test_a_pdf_of_a_three_line_invoice_shows_its_lines_totals_and_credit_note():
    pdf = render_pdf(_document())
    text = _pdf_text(pdf)
    assert pdf.startswith(b"%PDF")
    assert text.startswith("Invoice Invoice number TST-000042")
    for fragment in (
        "Date of issue 2026-03-01",
        "Date due 2026-03-31",
        "Billing period 2026-03-01 – 2026-04-01",
        "Tessellate Software Ltd billing@tessellate.example",
        "Initech LLC ap@initech.example",
        "Amount due USD 95.00 by 2026-03-31",
        "Pro plan (3 seats) 2026-03-01 – 2026-04-01 3 USD 29.00 USD 87.00",
        "Unused time on Basic plan after 10 Feb 2026-02-10 – 2026-03-01 1 -USD 12.50 -USD 12.50",
        "Emails sent 2026-02-01 – 2026-03-01 4,200 USD 0.01 USD 42.00",
        "Subtotal USD 116.50 Total USD 116.50 Credit notes -USD 15.00 Applied balance -USD 6.50",
        "Amount paid USD 0.00 Amount due USD 95.00",
        "TST-CN-000001 2026-03-02 Order change USD 15.00",
    ):
        assert fragment in text


def test_the_same_invoice_renders_to_the_same_pdf_bytes():
    assert render_pdf(_document()) == render_pdf(_document())


def test_the_hosted_page_has_a_title_a_three_row_lines_table_and_the_amount_due():
    page = render_html(_document(), pdf_url="https://billing.example/v1/invoices/x.pdf")
    tree = _Tree(page).root
    assert tree.find_all("title")[0].text() == "Invoice TST-000042 - Tessellate Software Ltd"
    assert {"name": "robots", "content": "noindex"} in [meta.attrs for meta in tree.find_all("meta")]
    assert tree.find_all("h1")[0].text() == "Invoice"
    assert tree.find_all("span", "badge")[0].text() == "Open"
    (lines,) = tree.find_all("table", "lines")
    rows = [[cell.text() for cell in row.find_all("td")] for row in lines.find_all("tbody")[0].find_all("tr")]
    assert rows[1] == [
        "Unused time on Basic plan after 10 Feb",
        "2026-02-10 – 2026-03-01",
        "1",
        "-USD 12.50",
        "-USD 12.50",
    ]
    assert [row[4] for row in rows] == ["USD 87.00", "-USD 12.50", "USD 42.00"]
    assert lines.find_all("td", "credit")[0].text() == "-USD 12.50"
    assert tree.find_all("p", "headline")[0].text() == "Amount due USD 95.00 by 2026-03-31"
    totals = [row.text() for row in tree.find_all("table", "totals")[0].find_all("tr")]
    assert totals[-1] == "Amount due USD 95.00"
    assert [row.text() for row in tree.find_all("table", "notes")[0].find_all("tr")][1:] == [
        "TST-CN-000001 2026-03-02 Order change USD 15.00"
    ]
    (link,) = tree.find_all("a", "download")
    assert link.attrs["href"] == "https://billing.example/v1/invoices/x.pdf"


def test_the_hosted_page_loads_nothing_and_runs_nothing():
    tree = _Tree(render_html(_document(), pdf_url="/v1/invoices/x.pdf")).root
    assert tree.find_all("script") == [] and tree.find_all("link") == [] and tree.find_all("img") == []
    assert all(not name.startswith("on") for node in tree.find_all("a") for name in node.attrs)


def test_tenant_text_on_the_hosted_page_is_escaped_not_markup():
    document = dataclasses.replace(
        _document(lines={"object": "list", "data": [{**LINES[0], "description": '"><img src=x onerror=alert(1)>'}]}),
        seller={"name": "<script>alert(1)</script>", "email": "a&b@example.com"},
    )
    page = render_html(document)
    tree = _Tree(page).root
    assert tree.find_all("script") == [] and tree.find_all("img") == []
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert tree.find_all("p", "name")[0].text() == "<script>alert(1)</script>"
    assert tree.find_all("table", "lines")[0].find_all("td")[0].text() == '"><img src=x onerror=alert(1)>'


def test_a_javascript_pdf_url_is_not_linked():
    tree = _Tree(render_html(_document(), pdf_url="JavaScript:alert(1)")).root
    assert tree.find_all("a") == []


def test_unicode_and_emoji_names_render_without_raising():
    document = dataclasses.replace(
        _document(lines={"object": "list", "data": [{**LINES[0], "description": "Pro 🚀 plan\nfor\tZoë\x00"}]}),
        seller={"name": "株式会社テスト 🚀", "email": "請求@例え.jp"},
        buyer={"name": "Zoë Ørsted – “Café” €", "email": "zoe@example.dk"},
    )
    text = _pdf_text(render_pdf(document))
    assert "??????? ?" in text  # what Helvetica cannot draw becomes "?", one per character
    assert "Zoë Ørsted – “Café” €" in text  # Windows-1252 covers these
    assert "Pro ? plan for Zoë" in text
    page = render_html(document)
    assert "株式会社テスト 🚀" in page and "Zoë Ørsted – “Café” €" in page


def test_a_draft_renders_as_a_draft_without_a_number():
    unissued = {"number": None, "finalized_at": None, "due_at": None, "pre_payment_credit_notes_amount": 0}
    draft = _document(status="draft", amount_due=11650, credit_applied=0, **unissued)
    document = dataclasses.replace(draft, credit_notes=[])
    text = _pdf_text(render_pdf(document))
    assert text.startswith("Draft invoice DRAFT Created 2026-03-01 Billing period")
    assert "Invoice number" not in text and "None" not in text and "Credit notes" not in text
    assert "Draft: USD 116.50, not yet issued" in text
    tree = _Tree(render_html(document)).root
    assert tree.find_all("h1")[0].text() == "Draft invoice"
    assert tree.find_all("span", "badge")[0].text() == "Draft"
    assert "Invoice number" not in tree.find_all("dl")[0].text()


@pytest.mark.parametrize(
    ("status", "changes", "mark", "headline"),
    [
        ("void", {"amount_due": 0}, "VOID", "Void: nothing is due"),
        (
            "paid",
            {"amount_due": 0, "amount_paid": 9500, "paid_at": _at("2026-03-05")},
            "PAID",
            "Paid USD 95.00 on 2026-03-05",
        ),
        ("uncollectible", {}, "UNCOLLECTIBLE", "Uncollectible: USD 95.00 unpaid"),
    ],
)
def test_a_settled_or_abandoned_invoice_is_stamped_with_its_status(status, changes, mark, headline):
    document = _document(status=status, **changes)
    text = _pdf_text(render_pdf(document))
    assert text.startswith(f"Invoice {mark} Invoice number TST-000042")
    assert headline in text
    assert _Tree(render_html(document)).root.find_all("p", "headline")[0].text() == headline


def test_a_credit_after_payment_is_listed_below_the_amount_due():
    document = _document(status="paid", amount_due=0, amount_paid=9500, post_payment_credit_notes_amount=2000)
    text = _pdf_text(render_pdf(document))
    assert "Amount paid USD 95.00 Amount due USD 0.00 Credited after payment USD 20.00" in text


def test_long_descriptions_wrap_onto_as_many_pages_as_they_need():
    unbroken = "A" * 2000
    lines = [{**LINES[0], "description": unbroken}] + [{**LINES[2], "description": f"Item {n}"} for n in range(60)]
    pdf = render_pdf(_document(lines={"object": "list", "data": lines}))
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = _pdf_text(pdf)
    assert len(reader.pages) >= 2
    assert f"page {len(reader.pages)} of {len(reader.pages)}" in text
    assert "Item 59" in text and "Amount due USD 95.00" in text
    joined = text.replace(" ", "")
    assert "A" * 60 not in text  # wrapped within its column
    assert "A" * 497 + "..." in joined and "A" * 498 not in joined  # and cut at 500 characters


def test_importing_the_documents_module_does_not_load_fpdf():
    probe = (
        "import sys, chalicelib.billing.documents\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fpdf', 'PIL', 'fontTools')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_text_that_normalisation_expands_still_fits_the_pdf():
    # U+FDFA is one character that NFKC turns into 18: clipped after normalising, not before.
    lines = [{**LINES[0], "description": "\ufdfa" * 500}, {**LINES[2], "description": "\u33ff" * 500}]
    pdf = render_pdf(_document(lines={"object": "list", "data": lines}))
    assert pdf.startswith(b"%PDF") and "Amount due USD 95.00" in _pdf_text(pdf)


def test_a_discounted_and_taxed_invoice_shows_subtotal_discount_each_rate_and_total():
    taxes = [
        {
            "tax_rate": "r1",
            "amount": 741,
            "inclusive": False,
            "taxable_amount": 3900,
            "display_name": "VAT",
            "percentage": "19",
        },
        {
            "tax_rate": "r2",
            "amount": 160,
            "inclusive": True,
            "taxable_amount": 840,
            "display_name": "MwSt",
            "percentage": "19",
        },
    ]
    document = _document(
        subtotal=4900, total_discount=1000, tax=901, total=4641, total_tax_amounts=taxes, amount_due=4641
    )

    text = _pdf_text(render_pdf(document))
    totals = [row.text() for row in _Tree(render_html(document)).root.find_all("table", "totals")[0].find_all("tr")]

    expected = ["Subtotal USD 49.00", "Discount -USD 10.00", "VAT 19% USD 7.41", "MwSt 19% included USD 1.60"]
    assert totals[:5] == [*expected, "Total USD 46.41"]
    assert " ".join([*expected, "Total USD 46.41"]) in text
