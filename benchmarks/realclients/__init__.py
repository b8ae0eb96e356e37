"""A real-client load benchmark: WebSocket clients against two server nodes (issue 12).

``python -m benchmarks.realclients --clients 500,1000,2000`` starts Redis, two nodes
per target (the demo on Daphne, a plain chat consumer on this layer and on
channels_redis's pub/sub layer, and the plain consumer under uvicorn) and client
processes using the ``websockets`` library; see docs/performance.md, "Real clients".
"""
