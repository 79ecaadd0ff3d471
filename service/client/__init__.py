"""`python -m service.client` / `invariant-predict`: score a CSV file with a server (V2 binary requests,
several in flight) or in-process with the same executor at the same C (`--local REPO`). A top floor beside
service.cli: the server never imports it."""
