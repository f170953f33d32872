"""Wire shapes: the JSON that crosses the client and upstream connections."""
