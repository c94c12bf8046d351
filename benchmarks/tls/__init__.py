"""The TLS run (``make bench-tls``): TLS handshakes/s and 1 MiB wss echo, zcasgi beside uvicorn."""
