"""The model on Ray Serve, for users who outgrow one machine: ``python -m serve --model MODEL`` runs it
locally; ``serve/config.yaml`` deploys it (docs/serving.md). A separate deployable: it imports
``labeler``, and nothing in ``labeler`` imports it. Importing this package imports nothing else.
"""
