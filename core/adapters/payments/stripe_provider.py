"""stripe: a PaymentIntent created and confirmed off-session for the customer's saved
payment method, with the attempt's idempotency key (Stripe returns the same
PaymentIntent for a repeated key, so a retried attempt never charges twice)."""

from __future__ import annotations

from typing import Any

import stripe

from core.adapters.payments import ChargeRequest, ChargeResult, TemporaryFailure
from core.domain.money import minor_units


def amount_in_minor_units(request: ChargeRequest) -> int:
    scaled = request.amount.scaleb(minor_units(request.currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{request.amount} {request.currency} is not in whole minor units")
    return int(scaled)


class StripeProvider:
    name = "stripe"

    def __init__(self, api_key: str, api_base: str | None = None) -> None:
        base: Any = {"api": api_base} if api_base else {}
        self.client = stripe.StripeClient(api_key, base_addresses=base, max_network_retries=0)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if not request.provider_customer_id or not request.payment_method:
            return ChargeResult(
                "failed", error="the customer has no Stripe customer id or payment method"
            )
        try:
            intent = self.client.v1.payment_intents.create(
                params={
                    "amount": amount_in_minor_units(request),
                    "currency": request.currency.lower(),
                    "customer": request.provider_customer_id,
                    "payment_method": request.payment_method,
                    "off_session": True,
                    "confirm": True,
                    "description": f"Invoice {request.invoice_number}",
                    "metadata": {"invoice_id": request.invoice_id},
                },
                options={"idempotency_key": request.idempotency_key},
            )
        except stripe.CardError as error:
            intent_id = getattr(getattr(error, "error", None), "payment_intent", None)
            provider_id = intent_id.get("id") if isinstance(intent_id, dict) else None
            return ChargeResult("failed", provider_id, error.user_message or str(error))
        except (stripe.APIConnectionError, stripe.RateLimitError) as error:
            raise TemporaryFailure(str(error)) from error
        except stripe.APIError as error:
            raise TemporaryFailure(str(error)) from error
        except stripe.StripeError as error:  # invalid request, authentication: not transient
            return ChargeResult("failed", None, str(error))
        if intent.status == "succeeded":
            return ChargeResult("succeeded", intent.id)
        if intent.status in {"processing", "requires_capture"}:
            return ChargeResult("awaiting", intent.id)  # the webhook settles it
        return ChargeResult("failed", intent.id, f"payment intent {intent.status}")
