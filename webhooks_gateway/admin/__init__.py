"""The operators' side of the gateway: the admin API, mounted at /admin/api."""

from webhooks_gateway.admin.api import create_admin_api

__all__ = ["create_admin_api"]
