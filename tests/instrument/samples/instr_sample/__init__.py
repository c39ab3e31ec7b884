"""A package for the instrumentation tests: one module per callable kind is imported by its test."""
