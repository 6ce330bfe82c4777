"""`coachlab serve`: the OpenAI-compatible coaching proxy (Starlette under uvicorn, httpx upstream).

`coachlab.serve.proxy` holds the ASGI app (`create_app`); the command is in `coachlab.cli.serve`. Nothing
is imported here, so that registering the command keeps `coachlab --help` fast.

The map of the packages is docs/architecture.md.
"""
