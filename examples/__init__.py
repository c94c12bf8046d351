"""Example applications served by zcasgi (``zcasgi examples.chat:app``)."""
