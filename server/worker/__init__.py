"""Code that runs in the model worker process; the HTTP process reaches it only through
`server.worker_handle`."""
