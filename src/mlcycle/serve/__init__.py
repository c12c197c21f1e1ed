"""The REST micro-service that serves a model bundle."""
