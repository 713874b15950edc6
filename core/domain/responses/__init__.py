"""What the API answers, as typed models: one module per area (catalog, usage, pricing,
invoices, payments, operations).

Each route declares its model (`APP.route(..., response=Model)`); the HTTP boundary
validates a handler's answer against it and serializes it through it, and the OpenAPI
document's response schemas are generated from the same models — the document cannot
drift from the answers. Every model forbids undeclared fields, so a field a service adds
without declaring it fails loudly (a 500 and a log line) instead of slipping out
undocumented.
"""
