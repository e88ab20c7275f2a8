"""Personal data: retention of raw rows, their Parquet archive, and erasure of one number."""
