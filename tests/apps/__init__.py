"""Raw ASGI applications that the end-to-end tests serve with zcasgi."""
