"""MNIST Lab's tests. A package, so pytest puts the repository root on sys.path and the tests
import their helpers as `tests.helpers`; `core` and `dashboard` come from the editable install."""
