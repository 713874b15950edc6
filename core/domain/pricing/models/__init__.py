"""One module per pricing model, each `price(charge, usage) -> Priced` (API.md section 2)."""
