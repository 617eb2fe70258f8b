"""Apps that integration tests start workers for (``aiotq worker -A tests.apps.slow``)."""
