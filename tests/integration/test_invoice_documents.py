"""Invoice documents over HTTP: the PDF of an issued invoice carries its number, period,
lines and total as a reader sees them (read back with pypdf); a draft has none; the HTML
shows formatted amounts, escapes customer text, shows a graduated plan's tier table and
names the invoice a replacement replaces."""

from core.services import aggregation, ingest, invoice_documents
from tests.fixtures.pdf import page_sizes_mm, pdf_text
from tests.integration.billing_setup import JUNE, NOW, _event

JUNE_PERIOD = ("1 June 2026", "30 June 2026")


def _get(client, path):
    return client.invoice.get(path, headers=client.headers)


def _issued_june(client, subscription_id):
    draft = client.draft(subscription_id)
    return client.call("POST", f"/v1/invoices/{draft['id']}/issue")


def test_an_issued_invoice_as_pdf_shows_its_number_period_lines_and_total(billing):
    client, subscription_id = billing
    issued = _issued_june(client, subscription_id)
    response = _get(client, f"/v1/invoices/{issued['id']}.pdf")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/pdf"
    assert response.headers["Content-Disposition"] == (f'inline; filename="{issued["number"]}.pdf"')
    assert page_sizes_mm(response.get_data()) == [(210, 297)]  # one A4 page
    text = pdf_text(response.get_data())
    assert issued["number"] in text
    assert "13.00 USD" in text  # total and amount due: 300 x 0.01 + 10
    for day in JUNE_PERIOD:
        assert day in text
    # every line: its description and its amount in the currency's minor units
    assert [(line["charge"], line["amount"]) for line in issued["lines"]] == [
        ("api_calls", "3"),
        ("Platform fee", "10"),
    ]
    for description, amount in (("api_calls", "3.00"), ("Platform fee", "10.00")):
        assert description in text and amount in text
    assert "300 units at 0.01 each." in text  # the breakdown, with the exact unit price
    assert issued["checksum"] in text.replace("\n", "")  # the audit footer (may wrap)


def test_a_draft_has_no_pdf(billing):
    client, subscription_id = billing
    draft = client.draft(subscription_id)
    response = _get(client, f"/v1/invoices/{draft['id']}.pdf")
    assert response.status_code == 409
    assert response.get_json()["code"] == "invoice_not_issued"
    assert _get(client, "/v1/invoices/inv_missing.pdf").status_code == 404


def test_the_html_shows_formatted_amounts_and_escapes_customer_text(billing):
    client, subscription_id = billing
    client.api.patch("/v1/customers/cust_acme", {"name": "<b>Acme & Co</b>"})
    draft = client.draft(subscription_id)
    response = _get(client, f"/v1/invoices/{draft['id']}.html")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for amount in ("3.00", "10.00", "13.00 USD"):
        assert f">{amount}<" in page
    assert "&lt;b&gt;Acme &amp; Co&lt;/b&gt;" in page and "<b>Acme" not in page
    assert "DRAFT" in page and "1 June 2026 \u2013 30 June 2026" in page
    assert "@page" in page and "size: A4" in page
    assert "http://" not in page and "https://" not in page  # nothing to fetch: air-gapped


def _tiered_subscription(client):
    """Graduated pricing on api_calls for a second customer with 300 June calls:
    100 x 0.05 | 100 x 0.02 + 1 | 100 x 0.005 = 5 + 3 + 0.5 = 8.50."""
    client.api.post(
        "/v1/price-plans",
        {
            "code": "graduated",
            "name": "Graduated",
            "currency": "USD",
            "interval": "month",
            "charges": [
                {
                    "metric_key": "api_calls",
                    "model": "tiered",
                    "name": "API calls",
                    "tiers": [
                        {"up_to": "100", "unit_price": "0.05"},
                        {"up_to": "200", "unit_price": "0.02", "flat_fee": "1"},
                        {"up_to": None, "unit_price": "0.005"},
                    ],
                }
            ],
        },
    )
    client.api.post("/v1/customers", {"id": "cust_tier", "name": "Tier Ltd", "currency": "USD"})
    subscription = client.api.post(
        "/v1/subscriptions",
        {"customer_id": "cust_tier", "plan_code": "graduated", "starts_at": JUNE.isoformat()},
    )
    ingest.ingest([_event(f"t{n}", n % 30, customer="cust_tier") for n in range(300)], now=NOW)
    aggregation.drain()
    return subscription["id"]


TIER_ROWS = (
    ("0", "100", "100", "0.05", "0.00", "5.00"),
    ("100", "200", "100", "0.02", "1.00", "3.00"),
    ("200", "∞", "100", "0.005", "0.00", "0.50"),
)


def test_a_graduated_line_shows_its_tier_table_in_html_and_pdf(billing):
    client, _ = billing
    issued = _issued_june(client, _tiered_subscription(client))
    assert issued["total"] == "8.5"
    page = _get(client, f"/v1/invoices/{issued['id']}.html").get_data(as_text=True)
    for header in ("From", "To", "Units", "Unit price", "Flat fee", "Amount"):
        assert f">{header}</th>" in page
    for row in TIER_ROWS:
        assert "".join(f'<td class="n">{cell}</td>' for cell in row) in page
    text = pdf_text(_get(client, f"/v1/invoices/{issued['id']}.pdf").get_data())
    assert "From To Units Unit price Flat fee Amount" in text
    for row in TIER_ROWS:
        assert " ".join(row) in text
    assert "8.50 USD" in text


def test_a_replacement_names_the_invoice_it_replaces_and_shows_its_adjustments(billing):
    client, subscription_id = billing
    first = _issued_june(client, subscription_id)
    client.call("POST", f"/v1/invoices/{first['id']}/void", {"reason": "wrong plan"})
    client.call(
        "POST",
        "/v1/adjustments",
        {"customer_id": "cust_acme", "amount": "-2.5", "reason": "goodwill: outage on June 3"},
        201,
    )
    replacement = client.draft(subscription_id, expect=201)
    assert replacement["replaces"] == first["id"]
    issued = client.call("POST", f"/v1/invoices/{replacement['id']}/issue")
    adjustments = [line for line in issued["lines"] if line["type"] == "adjustment"]
    assert adjustments, issued["lines"]
    text = pdf_text(_get(client, f"/v1/invoices/{issued['id']}.pdf").get_data())
    assert f"Replaces invoice {first['number']}." in text
    for line in adjustments:
        assert line["description"] in text
    assert "-2.50" in text
    # the voided invoice keeps its PDF, which says it is void and that nothing is due
    voided = pdf_text(_get(client, f"/v1/invoices/{first['id']}.pdf").get_data())
    assert "VOID" in voided.upper() and "wrong plan" in voided and "0.00 USD" in voided


def test_the_pdf_renderer_fetches_nothing(tmp_path):
    """Air-gapped and safe whatever a document contains: a stylesheet it links (here a
    local file that would make the page A3) is never read, and the page stays WeasyPrint's
    default A4; the same rule inlined does make it A3."""
    stylesheet = tmp_path / "a3.css"
    stylesheet.write_text("@page { size: A3 }")
    linked = f'<html><head><link rel="stylesheet" href="{stylesheet.as_uri()}"></head>x</html>'
    assert page_sizes_mm(invoice_documents._pdf(linked)) == [(210, 297)]
    inlined = "<html><head><style>@page { size: A3 }</style></head>x</html>"
    assert page_sizes_mm(invoice_documents._pdf(inlined)) == [(297, 420)]
