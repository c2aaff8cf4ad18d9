"""Entry point of the verify worker process: ``python -m des_migrate._verify_worker``.

Kept apart from ``_verifier`` (which the package imports) so running it as ``__main__`` does
not load that module twice.
"""

from des_migrate._verifier import worker_main

if __name__ == "__main__":
    worker_main()
