"""Ingest: generators, samplers, activation capture and the writers that fill the Parquet lake."""
