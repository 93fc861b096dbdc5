"""Endpoint kinds (one module each) and the pool that spreads requests over them."""

from .base import Completion, Endpoint, EndpointError
from .http import HttpEndpoint
from .pool import EndpointPool, EndpointStats, endpoint_kind

# OpenAIEndpoint lives in .openai_sdk and is imported on demand (the SDK takes 0.4 s to import).
__all__ = ["Completion", "Endpoint", "EndpointError", "EndpointPool", "EndpointStats", "HttpEndpoint",
           "endpoint_kind"]
