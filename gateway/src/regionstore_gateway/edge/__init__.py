"""The HTTP edge: what every request meets before and after its route (body limit, timeouts,
security headers, metrics, access log), the OpenAPI document, the console's files, and the
plain create answered in front of the router."""
