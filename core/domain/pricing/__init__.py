"""Pricing: charge definitions (charges), the formula language (formula); the pricing
functions, one module per model, come with the pricing engine."""
