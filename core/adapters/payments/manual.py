"""manual: nothing is charged; the invoice waits for POST /v1/invoices/{id}/mark-paid."""

from __future__ import annotations

from core.adapters.payments import ChargeRequest, ChargeResult


class ManualProvider:
    name = "manual"

    def charge(self, request: ChargeRequest) -> ChargeResult:
        return ChargeResult("awaiting")
