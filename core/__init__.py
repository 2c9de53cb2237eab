"""The ground floor: config schema and loading, checkpoint files, atomic files, runtime helpers.

Imports nothing of the project above it."""
