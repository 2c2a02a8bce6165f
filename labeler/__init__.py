"""The AST audio labeler, in rooms of one concern; ``transform.py`` beside it builds and runs them.

Imports point one way, from the pipeline down to what everything shares:

    pipeline -> classifiers, studio, folder, review -> records -> timeline, labels, audio -> core

Importing the package has no side effects, and nothing here imports ``transform``.
"""
