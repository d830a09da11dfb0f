"""``sodec serve``: a local web demo (compress, compare with classical codecs at the same size, download).

Needs the ``serve`` extra (``pip install 'sodec[serve]'``: starlette + uvicorn).  See docs/serve.md.
"""
