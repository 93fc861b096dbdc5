"""What serves the models: endpoints and their pool, managed vLLM servers, model provisioning,
the server's own routes and metrics, and the swap strategies that change the served model."""

from .api import ServerApi, SwapError
from .connect import Serving, build_swapper, open_serving
from .endpoints import EndpointPool
from .metrics import ServerMetrics
from .server import ManagedServer

__all__ = ["EndpointPool", "ManagedServer", "ServerApi", "ServerMetrics", "Serving", "SwapError", "build_swapper",
           "open_serving"]
